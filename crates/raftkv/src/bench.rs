//! `raftkv bench`: a load generator over etcd's v3 API (placeholder until the bench issue).

/// Benchmark settings.
#[derive(clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(_a: BenchArgs) -> Result<(), String> {
    Err("bench: not implemented yet".into())
}
