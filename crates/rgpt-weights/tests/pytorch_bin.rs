//! Reading `torch.save` checkpoints against tensors torch itself wrote.
//!
//! Reference: the fixtures in tests/fixtures/torch_bin were produced by torch
//! 2.11.0 via scripts/fixtures/torch_bin.py; `expected.safetensors` holds a
//! contiguous copy of every tensor and, in its metadata, the names each
//! fixture must yield.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rgpt_weights::{Checkpoint, WeightFormat};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/torch_bin")
}

fn open(path: &Path) -> Checkpoint {
    Checkpoint::open(path).unwrap_or_else(|e| {
        panic!("{e} (run scripts/fixtures/torch_bin.py if the fixtures are missing)")
    })
}

/// The names each fixture must yield, from expected.safetensors' metadata.
fn expected_names() -> HashMap<String, BTreeSet<String>> {
    let path = fixtures().join("expected.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let Some(fixtures) = metadata.metadata() else {
        panic!("expected.safetensors has no metadata")
    };
    fixtures
        .iter()
        .map(|(fixture, names)| {
            let names: BTreeSet<String> =
                serde_json::from_str(names).unwrap_or_else(|e| panic!("{fixture}: {e}"));
            (fixture.clone(), names)
        })
        .collect()
}

fn assert_matches_expected(fixture: &str, path: &Path) {
    let names = expected_names();
    let Some(want) = names.get(fixture) else {
        panic!("expected.safetensors lists no names for {fixture}")
    };
    let expected = open(&fixtures().join("expected.safetensors"));
    let checkpoint = open(path);
    assert_eq!(checkpoint.format(), WeightFormat::PytorchBin);
    let got: BTreeSet<String> = checkpoint.names().map(str::to_string).collect();
    assert_eq!(&got, want, "{fixture}: tensor names");
    for name in want {
        let (Ok(have), Ok(reference)) = (checkpoint.tensor(name), expected.tensor(name)) else {
            panic!("{fixture}: cannot read `{name}`")
        };
        assert_eq!(
            checkpoint.dtype(name),
            expected.dtype(name),
            "{fixture}: dtype of `{name}`"
        );
        assert_eq!(
            have.size(),
            reference.size(),
            "{fixture}: shape of `{name}`"
        );
        assert_eq!(have.kind(), reference.kind(), "{fixture}: kind of `{name}`");
        assert!(
            have.equal(&reference),
            "{fixture}: values of `{name}` differ"
        );
    }
}

#[test]
fn state_dict_protocol_2() {
    assert_matches_expected("state.bin", &fixtures().join("state.bin"));
}

#[test]
fn state_dict_protocol_4_in_archive_folder() {
    assert_matches_expected(
        "state_protocol4.bin",
        &fixtures().join("state_protocol4.bin"),
    );
}

#[test]
fn nested_state_dict_is_flattened() {
    assert_matches_expected("nested.bin", &fixtures().join("nested.bin"));
}

#[test]
fn sharded_directory_with_index() {
    let dir = fixtures().join("sharded");
    assert!(dir.join("pytorch_model.bin.index.json").is_file());
    assert_matches_expected("sharded", &dir);
}

/// A scratch directory unique to this process and test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-weights-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn assert_error_names_file(path: &Path, also: &str) {
    let message = match Checkpoint::open(path) {
        Ok(_) => panic!("{} opened, but it should not", path.display()),
        Err(e) => e.to_string(),
    };
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name the file: {message}"
    );
    assert!(
        message.contains(also),
        "error does not mention {also:?}: {message}"
    );
    assert!(
        !message.contains('\n'),
        "error spans several lines: {message}"
    );
}

#[test]
fn legacy_format_is_refused_with_advice() {
    assert_error_names_file(
        &fixtures().join("legacy.bin"),
        "torch.save(torch.load(f), f)",
    );
}

#[test]
fn truncated_and_garbage_files_are_errors() {
    let dir = scratch("truncated");
    let state = std::fs::read(fixtures().join("state.bin")).unwrap_or_else(|e| panic!("{e}"));
    let truncated = dir.join("truncated.bin");
    std::fs::write(&truncated, &state[..state.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    let garbage = dir.join("garbage.bin");
    std::fs::write(&garbage, b"this is not a torch checkpoint\n".repeat(20))
        .unwrap_or_else(|e| panic!("{e}"));
    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").unwrap_or_else(|e| panic!("{e}"));

    assert_error_names_file(&truncated, "zip");
    assert_error_names_file(&garbage, "zip");
    assert_error_names_file(&empty, "zip");
    let _ = std::fs::remove_dir_all(&dir);
}
