//! The kv swarm's auth seeds: clients acting as users are served only with the
//! permission the auth state of the command's index gives.

use sim::kv::run_kv_seed;

#[test]
fn user_commands_are_served_only_with_the_permission_of_their_index() {
    // Seeds whose clients change the auth state and act as users: no command is served
    // under a revoked permission or an old stamp, and both outcomes occur (the check
    // is exercised, not vacuous).
    let (mut seeds, mut served, mut refused) = (0, 0, 0);
    for seed in 7000..7200 {
        let out = run_kv_seed(seed, false);
        if out.params.cluster.auth_share == 0.0 {
            continue;
        }
        if let Some(f) = &out.failure {
            panic!(
                "seed {seed} violated {}\nreplay: cargo run --release -p sim -- --seed {seed} --workload kv -v",
                f.violation
            );
        }
        seeds += 1;
        served += out.stats.auth_served;
        refused += out.stats.auth_refused;
        if seeds == 12 {
            break;
        }
    }
    println!("{seeds} auth seeds: {served} user commands served under auth, {refused} refused");
    assert_eq!(seeds, 12, "too few auth seeds in the range");
    assert!(served > 0 && refused > 0, "served {served}, refused {refused}");
}
