// Builds the console into dist/: one bundled, minified script and stylesheet, and the page.
// The coordinator embeds dist/ (coordinator/build.rs), so its binary serves the console.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

await rm("dist", { recursive: true, force: true });
await mkdir("dist", { recursive: true });
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome120", "firefox120", "safari17"],
  outfile: "dist/app.js",
  // Reproducible output: no timestamps, no absolute paths.
  legalComments: "linked",
  logLevel: "warning",
});
await copyFile("src/index.html", "dist/index.html");
console.log("console built into dist/");
