"""Writes an OCI image layout (https://github.com/opencontainers/image-spec) with one layer
made from a root filesystem folder, deterministically: entries sorted by name, every time set to
EPOCH, owners root unless named, gzip without name or time, JSON with sorted keys.

    python3 oci_layout.py ROOTFS OUT_DIR EPOCH DESCRIPTION [PATH=UID:GID ...]
"""
import gzip, hashlib, io, json, os, shutil, sys, tarfile, datetime

rootfs, out, epoch, description = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
owners = {}
for arg in sys.argv[5:]:
    path, ids = arg.split('=')
    uid, gid = ids.split(':')
    owners[path.strip('/')] = (int(uid), int(gid))
created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')

if os.path.exists(out):
    shutil.rmtree(out)
blobs = os.path.join(out, 'blobs', 'sha256')
os.makedirs(blobs)

def put(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), 'wb') as f:
        f.write(data)
    return 'sha256:' + digest

def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(',', ':')).encode()

def layer_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                paths.append(os.path.relpath(os.path.join(dirpath, name), rootfs))
        for rel in sorted(paths):
            info = tar.gettarinfo(os.path.join(rootfs, rel), arcname=rel)
            info.mtime = epoch
            info.uid, info.gid = owners.get(rel, (0, 0))
            info.uname = info.gname = ''
            if info.isreg():
                with open(os.path.join(rootfs, rel), 'rb') as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()

raw = layer_tar()
diff_id = 'sha256:' + hashlib.sha256(raw).hexdigest()
compressed = gzip.compress(raw, compresslevel=9, mtime=0)
layer_digest = put(compressed)

config = {
    'architecture': {'x86_64': 'amd64', 'aarch64': 'arm64'}.get(os.uname().machine, os.uname().machine),
    'os': 'linux',
    'created': created,
    'config': {
        'User': '1000:1000',
        'Env': ['PATH=/bin', 'HOME=/home/user', 'TERM=xterm-256color'],
        'Cmd': ['/bin/sh', '-l'],
        'WorkingDir': '/home/user',
        'Labels': {'org.opencontainers.image.description': 'fogshell default shell: ' + description},
    },
    'rootfs': {'type': 'layers', 'diff_ids': [diff_id]},
    'history': [{'created': created, 'created_by': 'images/build.sh: ' + description}],
}
config_bytes = canonical(config)
config_digest = put(config_bytes)

manifest = {
    'schemaVersion': 2,
    'mediaType': 'application/vnd.oci.image.manifest.v1+json',
    'config': {'mediaType': 'application/vnd.oci.image.config.v1+json', 'digest': config_digest, 'size': len(config_bytes)},
    'layers': [{'mediaType': 'application/vnd.oci.image.layer.v1.tar+gzip', 'digest': layer_digest, 'size': len(compressed)}],
}
manifest_bytes = canonical(manifest)
manifest_digest = put(manifest_bytes)

index = {
    'schemaVersion': 2,
    'mediaType': 'application/vnd.oci.image.index.v1+json',
    'manifests': [{
        'mediaType': 'application/vnd.oci.image.manifest.v1+json',
        'digest': manifest_digest,
        'size': len(manifest_bytes),
        'annotations': {'org.opencontainers.image.ref.name': 'default'},
    }],
}
with open(os.path.join(out, 'index.json'), 'wb') as f:
    f.write(canonical(index))
with open(os.path.join(out, 'oci-layout'), 'wb') as f:
    f.write(canonical({'imageLayoutVersion': '1.0.0'}))
with open(os.path.join(out, 'digest'), 'w') as f:
    f.write(manifest_digest + '\n')
