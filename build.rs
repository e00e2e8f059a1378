//! Rebuild when a migration is added: `sqlx::migrate!` embeds `migrations/` at compile time,
//! and cargo does not otherwise notice new files there. Also embeds every OpenAPI fragment in
//! `openapi/` (each area of the API owns one file), so adding a fragment needs no code change.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=openapi");
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("openapi");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("openapi/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut out = String::from(
        "/// Every OpenAPI fragment in `openapi/`, by file name.\npub const FRAGMENTS: &[(&str, &str)] = &[\n",
    );
    for path in names {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("openapi_fragments.rs");
    std::fs::write(dest, out).expect("write openapi_fragments.rs");
}
