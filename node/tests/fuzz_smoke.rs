//! The fuzz targets' smoke run on stable Rust: every body of `fuzz/src/lib.rs` gets its
//! seeds, every saved regression input (`fuzz/regressions/NAME/`), and seeded random and
//! mutated inputs. The long runs are `fuzz/run.sh` under cargo-fuzz (fuzz/README.md);
//! this keeps every target exercised in CI in a few seconds, and every crash ever found
//! replayed.

#[path = "../../fuzz/src/lib.rs"]
mod bodies;

use std::path::{Path, PathBuf};

use chorus_protocol::*;

/// Random inputs and mutations per target per run; small enough for seconds in a debug
/// build, fixed so a failure reproduces.
const RANDOM_INPUTS: usize = 8_000;
const MUTATIONS_PER_SEED: usize = 1_000;
const SEED: u64 = 0x00c0_ffee_5eed;

/// A tiny deterministic generator (SplitMix64): no dependency, same inputs every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A mutation as libFuzzer makes them: flip, overwrite, insert, delete, truncate,
    /// or plant an extreme length byte (bincode's varint markers 251..=253).
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(6) {
                0 if !out.is_empty() => {
                    let i = at.min(out.len() - 1);
                    out[i] ^= 1 << self.below(8);
                }
                1 if !out.is_empty() => {
                    let i = at.min(out.len() - 1);
                    out[i] = self.next() as u8;
                }
                2 => out.insert(at, self.next() as u8),
                3 if !out.is_empty() => {
                    out.remove(at.min(out.len() - 1));
                }
                4 => out.truncate(at),
                _ => {
                    let marker = [251u8, 252, 253, 255][self.below(4)];
                    out.insert(at, marker);
                    for _ in 0..self.below(9) {
                        out.insert(at + 1, 0xff);
                    }
                }
            }
        }
        out
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `dir`, if it exists.
fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn item(user: &str) -> Item {
    let mut item = Item::new(user, Kind::Text);
    item.rating = Some(3);
    item.text = "the new editor is slow".into();
    item.tags = vec!["editor".into(), "perf".into()];
    item
}

fn payload<T: bincode::Encode>(value: &T) -> Vec<u8> {
    encode_payload(value)
}

/// Valid inputs of each target, which mutations start from.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "client_frame" => [
            Request::Submit(item("alice")),
            Request::SubmitBatch(vec![item("a"), item("b")]),
            Request::Get(ItemId(7)),
            Request::ListByUser {
                user_id: "alice".into(),
                after: Some(PageToken(vec![1, 2, 3])),
                limit: 20,
            },
            Request::CreateApiKey {
                role: Role::Read,
                name: "reader".into(),
            },
            Request::RingSnapshot,
            Request::ListApiKeys,
            Request::RevokeApiKey {
                id: "0123456789abcdef".into(),
            },
            Request::Routed {
                epoch: 4,
                request: RoutedRequest::Submit(item("bob")),
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            payload(&ClientFrame {
                request_id: i as u64,
                request,
            })
        })
        .collect(),
        "hello" => vec![payload(&Hello {
            version: PROTOCOL_VERSION,
            api_key: "ck_0123456789abcdef0123456789abcdef".into(),
            client: "chorus-client/0.1.0".into(),
        })],
        "server_frame" => {
            let ring = RingSnapshot {
                epoch: 2,
                partitions: 4,
                members: vec![RingMember {
                    node: NodeId("node-1".into()),
                    addr: "127.0.0.1:7400".into(),
                }],
                owners: vec![0; 4],
            };
            [
                Ok(Response::Ring(ring)),
                Ok(Response::Batch(vec![Err(ErrorCode::Forbidden)])),
                Ok(Response::Page {
                    items: vec![],
                    next: Some(PageToken(vec![9])),
                }),
                Ok(Response::ApiKeyCreated {
                    key: "ck_x".into(),
                    role: Role::Admin,
                }),
                Ok(Response::Item(None)),
                Ok(Response::ApiKeys(vec![ApiKeyInfo {
                    id: "0123456789abcdef".into(),
                    role: Role::Read,
                    name: "dashboard".into(),
                    created_at: 1,
                    revoked_at: None,
                }])),
                Err(ErrorCode::invalid("rating", "9 is outside 1..=5")),
                Err(ErrorCode::RateLimited { retry_after_ms: 5 }),
            ]
            .into_iter()
            .enumerate()
            .map(|(i, result)| {
                payload(&ServerFrame {
                    request_id: i as u64,
                    result,
                })
            })
            .collect()
        }
        "control_request" => [
            r#"{"cmd":"status"}"#,
            r#"{"cmd":"log-level","filter":"debug"}"#,
            r#"{"cmd":"breakers"}"#,
            r#"{"cmd":"queues"}"#,
            r#"{"cmd":"audit-verify"}"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "config_file" => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster-config");
            let mut out = files_in(&root);
            out.extend(files_in(&root.join("local-3")));
            out
        }
        "log_segment" => {
            use chorus_actors::store::log::record::{
                RecordHeader, RecordKind, SEGMENT_MAGIC, encode_record,
            };
            let mut segment = SEGMENT_MAGIC.to_vec();
            for (i, user) in ["alice", "bob", "carol"].into_iter().enumerate() {
                let stored = StoredItem {
                    item: item(user),
                    receipt: Receipt {
                        id: ItemId(i as u128),
                        status: Status::Accepted,
                        alignment_score: None,
                        owner: NodeId("node-1".into()),
                        replicas: vec![NodeId("node-1".into())],
                        stored_at: 1_700_000_000_000,
                        enrichment: Enrichment::NotConfigured,
                    },
                };
                let header = RecordHeader {
                    kind: RecordKind::Item,
                    partition: i as u16,
                    sequence: 1,
                };
                encode_record(header, &payload(&stored), &mut segment);
            }
            vec![segment]
        }
        other => panic!("no seeds for {other}"),
    }
}

#[test]
fn every_fuzz_target_survives_its_seeds_regressions_and_random_mutations() {
    let mut rng = Rng(SEED);
    for &(name, body) in bodies::TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name} has seeds");
        let regressions = files_in(&fuzz_dir().join("regressions").join(name));
        let mut runs = 0usize;
        for input in seeds.iter().chain(&regressions) {
            body(input);
            runs += 1;
        }
        // Config parsing (TOML, regexes, a log filter) is slower: fewer inputs.
        let scale = if name == "config_file" { 10 } else { 1 };
        for seed in &seeds {
            for _ in 0..MUTATIONS_PER_SEED / scale {
                body(&rng.mutate(seed));
                runs += 1;
            }
        }
        for _ in 0..RANDOM_INPUTS / scale {
            let len = rng.below(256);
            body(&rng.bytes(len));
            runs += 1;
        }
        eprintln!(
            "{name}: {runs} inputs ({} regressions) without a crash",
            regressions.len()
        );
    }
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in bodies::TARGETS {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "fuzz/Cargo.toml lacks a [[bin]] for {name}"
        );
        assert!(fuzz_dir().join(format!("fuzz_targets/{name}.rs")).exists());
    }
}

/// Writes the seeds as cargo-fuzz seed corpora under `fuzz/seeds/NAME/` (run with
/// `CHORUS_WRITE_FUZZ_SEEDS=1`; the files are committed).
#[test]
fn write_the_seed_corpora_when_asked() {
    if std::env::var_os("CHORUS_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    for (name, _) in bodies::TARGETS {
        let dir = fuzz_dir().join("seeds").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
        }
    }
}
