//! Writes one encoded body per wire message variant into a folder, as seeds for the `wire`
//! fuzz target: `cargo run -p fogshell-shared --example wire_seeds -- fuzz/corpus/wire`.

use fogshell_shared::wire::{encode, samples};

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .ok_or_else(|| std::io::Error::other("usage: wire_seeds <output folder>"))?;
    std::fs::create_dir_all(&dir)?;
    let mut bodies: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: String, framed: Vec<u8>| bodies.push((name, framed[4..].to_vec()));
    for (i, m) in samples::agent_messages().iter().enumerate() {
        add(
            format!("agent-{i}"),
            encode(m).map_err(std::io::Error::other)?,
        );
    }
    for (i, m) in samples::coordinator_messages().iter().enumerate() {
        add(
            format!("coordinator-{i}"),
            encode(m).map_err(std::io::Error::other)?,
        );
    }
    add(
        "pty-header".into(),
        encode(&samples::pty_header()).map_err(std::io::Error::other)?,
    );
    for (i, m) in samples::pty_messages().iter().enumerate() {
        add(
            format!("pty-{i}"),
            encode(m).map_err(std::io::Error::other)?,
        );
    }
    let (request, responses) = samples::join_messages();
    add(
        "join-request".into(),
        encode(&request).map_err(std::io::Error::other)?,
    );
    for (i, m) in responses.iter().enumerate() {
        add(
            format!("join-response-{i}"),
            encode(m).map_err(std::io::Error::other)?,
        );
    }
    for (name, body) in &bodies {
        std::fs::write(dir.join(name), body)?;
    }
    println!("wrote {} seeds to {}", bodies.len(), dir.display());
    Ok(())
}
