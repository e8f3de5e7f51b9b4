//! The one boundary inside this crate that Cargo cannot enforce: the data-plane modules use
//! neither `gantry-auth` nor `gantry-spawner`. Only the hub (`src/hub/`) and the binary
//! (`src/cmd/`, `src/main.rs`) compose them. This test reads the sources and says which file
//! crossed the line.

use std::path::Path;

const COMPOSERS: [&str; 3] = ["hub", "cmd", "main.rs"];
const FORBIDDEN: [&str; 2] = ["gantry_auth", "gantry_spawner"];

fn check_path(path: &Path, crossings: &mut Vec<String>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            check_path(&entry.unwrap().path(), crossings);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        let text = std::fs::read_to_string(path).unwrap();
        for name in FORBIDDEN {
            if text.contains(name) {
                crossings.push(format!("{} uses {name}", path.display()));
            }
        }
    }
}

#[test]
fn the_data_plane_uses_neither_auth_nor_spawner() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut crossings = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if COMPOSERS.contains(&name.as_str()) || name == "boundary.rs" {
            continue;
        }
        check_path(&path, &mut crossings);
    }
    assert!(
        crossings.is_empty(),
        "the data plane must not depend on auth or spawner:\n{}",
        crossings.join("\n")
    );
}
