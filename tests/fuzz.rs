//! Mutation fuzzing of the readers that take bytes from outside the operator: the RDB scanner,
//! the runbook importer, the configuration archive reader and the snapshot reader (manifest,
//! MAC, age stream). Each target mutates its committed seeds (`tests/fuzz/<target>/`, made by
//! `scripts/fuzz-corpus.sh`; the runbook fixtures) for `TITAN_FUZZ_SECONDS` (default 5;
//! `make fuzz` runs longer) and holds it to: no panic, a bounded peak of live heap per input,
//! and, for snapshots, no changed snapshot verifies. Each prints its executions; a failing
//! input is written to `target/fuzz-failures/` to be replayed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use titan_dr::backup::{BackupKey, Manifest, SnapshotKind, Store, config_archive};
use titan_dr::redis::rdb;
use titan_dr::runbook;

/// Counts the live heap bytes of each thread, and their peak, so that a target's allocation
/// per input can be bounded while the other targets run on their own threads.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The peak of live heap bytes above the current level while `f` runs.
fn peak_allocation(f: impl FnOnce()) -> usize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    f();
    (PEAK.with(Cell::get) - base).max(0) as usize
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    FlipBit(prop::sample::Index, u8),
    SetByte(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Duplicate(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    /// A length-like value (little endian), where lengths and counts are read.
    Number(prop::sample::Index, u32),
}

fn edit() -> impl Strategy<Value = Edit> {
    let index = any::<prop::sample::Index>;
    let boundary = prop::sample::select(vec![0u8, 1, 0x7f, 0x80, 0xbf, 0xc0, 0xfe, 0xff]);
    prop_oneof![
        (index(), 0u8..8).prop_map(|(at, bit)| Edit::FlipBit(at, bit)),
        (index(), prop_oneof![boundary, any::<u8>()]).prop_map(|(at, b)| Edit::SetByte(at, b)),
        (index(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, b)| Edit::Insert(at, b)),
        (index(), 1usize..64).prop_map(|(at, n)| Edit::Delete(at, n)),
        (index(), 1usize..256).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        index().prop_map(Edit::Truncate),
        (index(), any::<u32>()).prop_map(|(at, n)| Edit::Number(at, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    if bytes.is_empty() {
        if let Edit::Insert(_, new) = edit {
            bytes.extend_from_slice(new);
        }
        return;
    }
    let len = bytes.len();
    match edit {
        Edit::FlipBit(at, bit) => bytes[at.index(len)] ^= 1 << bit,
        Edit::SetByte(at, byte) => bytes[at.index(len)] = *byte,
        Edit::Insert(at, new) => {
            let at = at.index(len + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Edit::Delete(at, n) => {
            let at = at.index(len);
            bytes.drain(at..(at + n).min(len));
        }
        Edit::Duplicate(at, n) => {
            let at = at.index(len);
            let copy = bytes[at..(at + n).min(len)].to_vec();
            bytes.splice(at..at, copy);
        }
        Edit::Truncate(at) => bytes.truncate(at.index(len)),
        Edit::Number(at, n) => {
            let at = at.index(len);
            for (i, byte) in n.to_le_bytes().into_iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = byte;
                }
            }
        }
    }
}

fn seeds(dir: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn budget() -> Duration {
    let seconds = std::env::var("TITAN_FUZZ_SECONDS").map_or(5.0, |s| {
        s.parse::<f64>()
            .unwrap_or_else(|_| panic!("TITAN_FUZZ_SECONDS={s}: not a number of seconds"))
    });
    Duration::from_secs_f64(seconds)
}

/// Mutates `seeds` until the budget is spent, checking each input with `check` (which panics
/// or returns an error on a finding) and its peak heap against `limit(input length)`.
fn fuzz(
    target: &str,
    seeds: &[Vec<u8>],
    limit: impl Fn(usize) -> usize,
    mut check: impl FnMut(&[u8]) -> Result<(), String>,
) {
    let seed = std::env::var("TITAN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.unwrap().as_nanos() as u64
        });
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let inputs = (
        prop::sample::select((0..seeds.len()).collect::<Vec<_>>()),
        prop::collection::vec(edit(), 0..8),
    );
    let (started, budget) = (Instant::now(), budget());
    let (mut executions, mut worst) = (0u64, 0usize);
    while executions == 0 || started.elapsed() < budget {
        let (which, edits) = inputs.new_tree(&mut runner).unwrap().current();
        let mut input = seeds[which].clone();
        for edit in &edits {
            apply(&mut input, edit);
        }
        let mut outcome = Ok(());
        let peak = peak_allocation(|| {
            outcome = catch_unwind(AssertUnwindSafe(|| check(&input)))
                .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic))));
        });
        let outcome = outcome.and_then(|()| {
            let bound = limit(input.len());
            (peak <= bound).then_some(()).ok_or_else(|| {
                format!(
                    "{peak} bytes of heap for {} input bytes (bound {bound})",
                    input.len()
                )
            })
        });
        if let Err(finding) = outcome {
            let file = keep_failure(target, executions, &input);
            panic!(
                "{target}: {finding}; input in {} (seed {seed})",
                file.display()
            );
        }
        worst = worst.max(peak);
        executions += 1;
    }
    println!(
        "fuzz {target}: {executions} executions in {:.1} s from {} seeds, peak heap per input {} KiB, seed {seed}",
        started.elapsed().as_secs_f64(),
        seeds.len(),
        worst / 1024
    );
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn keep_failure(target: &str, execution: u64, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{target}-{execution}"));
    std::fs::write(&file, input).unwrap();
    file
}

const MIB: usize = 1 << 20;

#[test]
fn rdb_scanner() {
    // The scanner keeps small strings (aux fields, function names) and counts; the expiry scan
    // keeps one u64 per key with an expiry, and a key takes at least ten bytes of input.
    fuzz(
        "rdb",
        &seeds("tests/fuzz/rdb"),
        |len| MIB + len,
        |input| {
            let _ = rdb::scan(input);
            let _ = rdb::scan_expiries(input);
            Ok(())
        },
    );
}

#[test]
fn runbook_importer() {
    let seed = include_str!("fixtures/runbooks/complete-system-failure.md");
    let mut corpus = seeds("tests/fixtures/runbooks");
    corpus.extend(seeds("tests/fixtures/runbooks/malformed"));
    fuzz(
        "runbook",
        &corpus,
        |len| 4 * MIB + 64 * len,
        |input| {
            let text = String::from_utf8_lossy(input);
            if let Ok(dr) = runbook::import(&text, None) {
                let again = runbook::import(&runbook::render(&dr), None);
                again
                    .map_err(|e| format!("what it imported does not import again rendered: {e}"))?;
            }
            let _ = runbook::import(seed, Some(&text));
            Ok(())
        },
    );
}

#[test]
fn configuration_archive_reader() {
    let mut seeds = seeds("tests/fuzz/archive");
    let own = config_archive::ArchivedObject {
        path: "configmaps/titan-config.yaml".into(),
        yaml: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: titan-config\n".into(),
    };
    let mut tar = Vec::new();
    config_archive::write(&[own], &mut tar).unwrap();
    seeds.push(tar);
    // A tar entry is read into memory whole, but no entry is larger than the input.
    fuzz(
        "archive",
        &seeds,
        |len| MIB + 4 * len,
        |input| {
            let _ = config_archive::read(input);
            Ok(())
        },
    );
}

/// A committed snapshot's manifest or data file, edited: it never verifies unless the edit left
/// what the manifest says unchanged (JSON whitespace, an unknown field, the MAC's hex in upper
/// case) and the data file as it was.
#[test]
fn snapshot_reader() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    let mut writer = store.begin_now(SnapshotKind::Configuration, &key).unwrap();
    std::io::Write::write_all(&mut writer, &seeds("tests/fuzz/archive")[0]).unwrap();
    let manifest = writer.commit(Some(2), None).unwrap();
    let (manifest_path, data_path) = (
        dir.path().join(Manifest::file_name(&manifest.id)),
        dir.path().join(&manifest.file),
    );
    let (manifest_bytes, data_bytes) = (
        std::fs::read(&manifest_path).unwrap(),
        std::fs::read(&data_path).unwrap(),
    );
    store
        .verify(&manifest.id, &key)
        .expect("the unedited snapshot verifies");
    // Seeds: the manifest alone, and the data file prefixed by a marker byte.
    let mut data_seed = vec![b'D'];
    data_seed.extend_from_slice(&data_bytes);
    let seeds = vec![[vec![b'M'], manifest_bytes.clone()].concat(), data_seed];
    fuzz(
        "snapshot",
        &seeds,
        |len| 4 * MIB + 4 * len,
        |input| {
            let (edited_manifest, edited_data) = match input.split_first() {
                Some((b'M', rest)) => (rest, data_bytes.as_slice()),
                Some((_, rest)) => (manifest_bytes.as_slice(), rest),
                None => return Ok(()),
            };
            std::fs::write(&manifest_path, edited_manifest).unwrap();
            std::fs::write(&data_path, edited_data).unwrap();
            let verified = store.verify(&manifest.id, &key);
            // What the MAC covers, and the MAC's bytes (hex is read in either case).
            let meaning = |m: &Manifest| (m.authenticated_bytes(), m.mac.to_ascii_lowercase());
            let unchanged = edited_data == data_bytes
                && serde_json::from_slice::<Manifest>(edited_manifest)
                    .is_ok_and(|edited| meaning(&edited) == meaning(&manifest));
            match verified {
                Ok(_) if !unchanged => Err("an edited snapshot verified".into()),
                Err(err) if unchanged => Err(format!("an unchanged snapshot was refused: {err}")),
                _ => Ok(()),
            }
        },
    );
}
