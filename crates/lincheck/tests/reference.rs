//! The checker against a naive reference (STYLE habit 8): on thousands of small
//! random register histories, a brute-force search over every order that
//! respects real time must give the same verdict. Unknown operations may take
//! effect anywhere after their invoke or never; failed ones not at all.

use lincheck::{
    check, CheckOptions, History, Model, Outcome, RegisterModel, RegisterOp, RegisterResult,
};

type RegHistory = History<RegisterOp, RegisterResult>;

/// xorshift64*: a seeded generator, so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random history of 1..=7 operations from a register run, sometimes with a
/// corrupted read so that about half are not linearizable.
fn random_history(rng: &mut Rng) -> RegHistory {
    let n = 1 + rng.below(7) as usize;
    // Distinct times 0..2n, shuffled into (invoke, return) pairs.
    let mut times: Vec<u64> = (0..2 * n as u64).collect();
    for i in (1..times.len()).rev() {
        times.swap(i, rng.below(i as u64 + 1) as usize);
    }
    struct Planned {
        input: RegisterOp,
        span: (u64, u64),
        effect_at: Option<u64>,
        kind: u64,
    }
    let mut planned: Vec<Planned> = (0..n)
        .map(|i| {
            let (a, b) = (times[2 * i], times[2 * i + 1]);
            let span = (a.min(b), a.max(b));
            let input = match rng.below(3) {
                0 => RegisterOp::Read,
                1 => RegisterOp::Write(rng.below(3) as i64),
                _ => RegisterOp::Cas { from: rng.below(3) as i64, to: rng.below(3) as i64 },
            };
            // kind 0: definite; 1: unknown, took effect (maybe after return);
            // 2: unknown, no effect; 3: failed, no effect.
            let kind = match rng.below(10) {
                0 => 1,
                1 => 2,
                2 => 3,
                _ => 0,
            };
            // Effect points are odd multiples of 1/2, doubled to stay integers.
            let effect_at = match kind {
                0 => Some(2 * span.0 + 1 + 2 * rng.below(span.1 - span.0)),
                1 => Some(2 * span.0 + 1 + 2 * rng.below(2 * n as u64 - span.0)),
                _ => None,
            };
            Planned { input, span, effect_at, kind }
        })
        .collect();
    // Run the register in effect order to learn each result.
    let mut order: Vec<usize> = (0..n).filter(|&i| planned[i].effect_at.is_some()).collect();
    order.sort_by_key(|&i| planned[i].effect_at);
    let mut results: Vec<Option<RegisterResult>> = vec![None; n];
    let mut value: Option<i64> = None;
    for &i in &order {
        results[i] = Some(match planned[i].input {
            RegisterOp::Read => RegisterResult::Read(value),
            RegisterOp::Write(v) => {
                value = Some(v);
                RegisterResult::Done
            }
            RegisterOp::Cas { from, to } => {
                if value == Some(from) {
                    value = Some(to);
                    RegisterResult::Done
                } else {
                    // A cas that did not match is a failed cas to the client.
                    planned[i].kind = 3;
                    RegisterResult::Done
                }
            }
        });
    }
    if rng.below(2) == 0 {
        let reads: Vec<usize> = (0..n)
            .filter(|&i| planned[i].kind == 0 && planned[i].input == RegisterOp::Read)
            .collect();
        if !reads.is_empty() {
            let i = reads[rng.below(reads.len() as u64) as usize];
            let corrupted = [None, Some(0), Some(1), Some(2)][rng.below(4) as usize];
            results[i] = Some(RegisterResult::Read(corrupted));
        }
    }
    // Record the events in time order, one client per operation.
    let mut events: Vec<(u64, usize, bool)> = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        events.push((p.span.0, i, true));
        events.push((p.span.1, i, false));
    }
    events.sort();
    let mut history = RegHistory::new();
    let mut ids = vec![None; n];
    for (time, i, is_invoke) in events {
        if is_invoke {
            ids[i] = Some(history.invoke(i as u64, time, planned[i].input.clone()));
            continue;
        }
        let outcome = match planned[i].kind {
            0 => Outcome::Ok(results[i].clone().expect("definite ops took effect")),
            1 | 2 => Outcome::Unknown,
            _ => Outcome::Fail,
        };
        history.complete(ids[i].expect("invoked"), time, outcome);
    }
    history
}

/// Tries every order: some operation whose invoke precedes the return of
/// every other unplaced definite operation goes next. Done when every
/// definite operation is placed; unknown ones may be left out.
fn brute_force(history: &RegHistory) -> bool {
    let ops: Vec<_> =
        history.operations().iter().filter(|op| op.outcome() != &Outcome::Fail).collect();
    let mut placed = vec![false; ops.len()];
    search(&ops, &mut placed, None)
}

fn search(
    ops: &[&lincheck::Operation<RegisterOp, RegisterResult>],
    placed: &mut [bool],
    state: Option<i64>,
) -> bool {
    let ret = |i: usize| {
        ops[i]
            .completion
            .as_ref()
            .map(|c| c.time)
            .filter(|_| matches!(ops[i].outcome(), Outcome::Ok(_)))
    };
    let unplaced_definite: Vec<usize> =
        (0..ops.len()).filter(|&i| !placed[i] && ret(i).is_some()).collect();
    if unplaced_definite.is_empty() {
        return true;
    }
    let horizon = unplaced_definite.iter().filter_map(|&i| ret(i)).min().expect("some");
    for i in 0..ops.len() {
        if placed[i] || ops[i].invoke_time > horizon {
            continue;
        }
        let output = match ops[i].outcome() {
            Outcome::Ok(o) => Some(o),
            _ => None,
        };
        if let Some(next) = RegisterModel.step(&state, &ops[i].input, output) {
            let next = next.into_owned();
            placed[i] = true;
            let found = search(ops, placed, next);
            placed[i] = false;
            if found {
                return true;
            }
        }
    }
    false
}

#[test]
fn checker_agrees_with_brute_force_on_random_register_histories() {
    let (mut linearizable, mut not) = (0, 0);
    for seed in 1..=4000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let history = random_history(&mut rng);
        let expected = brute_force(&history);
        let verdict = check(&RegisterModel, &history, &CheckOptions::default());
        assert_eq!(
            verdict.is_linearizable(),
            expected,
            "seed {seed}: checker says {verdict:?}, brute force says {expected}\n{history:#?}"
        );
        if expected {
            linearizable += 1;
        } else {
            not += 1;
        }
    }
    // Both answers must be common, or the comparison proves little.
    assert!(linearizable > 1000 && not > 500, "{linearizable} vs {not}");
}
