//! SIGKILL at random points: a client streams puts (of up to 3 MiB, and bursts of small
//! streamed puts the server commits together) and deletes at a real
//! `ferry serve`, which is killed with SIGKILL at a random moment, restarted, and checked:
//! every acknowledged put is listed and reads back byte-identical, every acknowledged delete
//! is gone, and nothing else is visible (the requests in flight at the kill may have
//! landed or not, but never half). Rounds: `FERRY_FAULT_ROUNDS` (default 8, a few seconds
//! each); the seed is printed and can be replayed with `FERRY_FAULT_SEED`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, Served};
use ferry::Client;
use ferry::proto::credential::Credential;

/// xorshift64*: a reproducible stream of test choices (not for anything secret).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the client knows about each source it touched.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Acknowledged: stored with this hash.
    Stored(blake3::Hash),
    /// Acknowledged: deleted.
    Deleted,
    /// In flight at the kill: a put of this hash (maybe landed, never half).
    MaybeStored(blake3::Hash),
    /// In flight at the kill: a delete of content with this hash.
    MaybeDeleted(blake3::Hash),
}

fn content(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => rng.below(64) as usize,
        1 => rng.below(64 * 1024) as usize,
        _ => rng.below(3 << 20) as usize,
    };
    bytes(rng, len)
}

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let seed = rng.next();
    (0..len)
        .map(|i| (seed.wrapping_add(i as u64).wrapping_mul(31) >> 7) as u8)
        .collect()
}

/// Puts and deletes until the first error (the kill); records every outcome in `model`.
async fn stream(
    cred: Credential,
    model: Arc<Mutex<BTreeMap<String, State>>>,
    seed: u64,
    round: u32,
) {
    let mut rng = Rng(seed);
    let Ok(mut client) = Client::connect(&cred).await else {
        return;
    };
    for i in 0.. {
        let live: Vec<(String, blake3::Hash)> = model
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| match v {
                State::Stored(h) => Some((k.clone(), *h)),
                _ => None,
            })
            .collect();
        if !live.is_empty() && rng.below(10) < 3 {
            let (source, hash) = live[rng.below(live.len() as u64) as usize].clone();
            model
                .lock()
                .unwrap()
                .insert(source.clone(), State::MaybeDeleted(hash));
            match client.delete(&source).await {
                Ok(_) => model.lock().unwrap().insert(source, State::Deleted),
                Err(_) => return,
            };
        } else if rng.below(3) == 0 {
            // A burst of small streamed puts, which the server commits together.
            let Ok(mut p) = client.pipeline().await else {
                return;
            };
            let mut sent = Vec::new();
            for j in 0..1 + rng.below(8) {
                let source = format!("f/{round}-{i}-{j}");
                let len = rng.below(64 * 1024) as usize;
                let data = bytes(&mut rng, len);
                let hash = blake3::hash(&data);
                model
                    .lock()
                    .unwrap()
                    .insert(source.clone(), State::MaybeStored(hash));
                if p.send_put_with(&source, &data, Default::default())
                    .await
                    .is_err()
                {
                    return;
                }
                sent.push((source, hash));
            }
            for (source, hash) in sent {
                match p.recv_put().await {
                    Ok(e) => {
                        assert_eq!(e.hash, *hash.as_bytes(), "put_ok names another hash");
                        model.lock().unwrap().insert(source, State::Stored(hash));
                    }
                    Err(_) => return,
                }
            }
        } else {
            let source = format!("f/{round}-{i}");
            let data = content(&mut rng);
            let hash = blake3::hash(&data);
            model
                .lock()
                .unwrap()
                .insert(source.clone(), State::MaybeStored(hash));
            match client.put_bytes(&source, data).await {
                Ok(e) => {
                    assert_eq!(e.hash, *hash.as_bytes(), "put_ok names another hash");
                    model.lock().unwrap().insert(source, State::Stored(hash))
                }
                Err(_) => return,
            };
        }
    }
}

/// Checks the restarted server against what the client was told; settles the uncertain
/// entries by what the server holds.
async fn check(cred: &Credential, model: &mut BTreeMap<String, State>) {
    let mut client = Client::connect(cred).await.unwrap();
    let listed: BTreeMap<String, _> = client
        .list("f/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.source.clone(), e))
        .collect();
    for (source, entry) in &listed {
        let state = model
            .get(source)
            .unwrap_or_else(|| panic!("{source} is visible but was never put"));
        let want = match *state {
            State::Stored(h) | State::MaybeStored(h) | State::MaybeDeleted(h) => h,
            State::Deleted => panic!("{source} was deleted (acknowledged) but is visible"),
        };
        assert_eq!(
            entry.hash,
            *want.as_bytes(),
            "{source}: listed with another hash"
        );
        let data = client.get_bytes(source).await.unwrap();
        assert_eq!(data.len() as u64, entry.size, "{source}: short read");
        assert_eq!(blake3::hash(&data), want, "{source}: content differs");
    }
    for (source, state) in model.iter_mut() {
        let present = listed.contains_key(source);
        *state = match *state {
            State::Stored(h) => {
                assert!(present, "{source} was stored (acknowledged) but is gone");
                State::Stored(h)
            }
            State::Deleted => State::Deleted,
            State::MaybeStored(h) | State::MaybeDeleted(h) if present => State::Stored(h),
            State::MaybeStored(_) | State::MaybeDeleted(_) => State::Deleted,
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_no_acknowledged_data() {
    let rounds: u32 = std::env::var("FERRY_FAULT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("FERRY_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("fault injection: {rounds} rounds, FERRY_FAULT_SEED={seed}");
    let env = Env::new();
    env.init();
    let mut server = Served::start(&env);
    let addr = server.addr.clone();
    let cred_path = env.issue("writer", "writer", &addr);
    let cred = Credential::parse(&std::fs::read_to_string(&cred_path).unwrap()).unwrap();
    let mut rng = Rng(seed);
    let mut model = BTreeMap::new();
    let started = Instant::now();
    for round in 0..rounds {
        let shared = Arc::new(Mutex::new(model.clone()));
        let client = tokio::spawn(stream(cred.clone(), shared.clone(), rng.next() | 1, round));
        // Somewhere in the first puts, in the middle of one as often as not.
        tokio::time::sleep(Duration::from_millis(50 + rng.below(700))).await;
        server.signal("KILL");
        server.wait(Duration::from_secs(10)).expect("killed");
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("the client stops at the kill")
            .unwrap();
        model = shared.lock().unwrap().clone();
        drop(server);
        server = Served::start_on(&env, &addr);
        check(&cred, &mut model).await;
    }
    let stored = model
        .values()
        .filter(|s| matches!(s, State::Stored(_)))
        .count();
    eprintln!(
        "fault injection: {rounds} kills; {} sources put, {stored} of them still stored, the \
         rest deleted; in {:?}",
        model.len(),
        started.elapsed()
    );
    assert!(
        model.values().any(|s| matches!(s, State::Stored(_))),
        "no put was ever acknowledged: the test checked nothing"
    );
}
