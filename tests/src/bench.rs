//! What the benchmark binaries share: percentiles and one line of figures per measure.

use std::time::Duration;

/// The `p` quantile (0..=1) of `sorted`, nearest rank. `sorted` must not be empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Prints `name`, the count, p50, p99 and the maximum of `samples`, in milliseconds.
pub fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<44} n={:<5} p50 {:>9.3} ms   p99 {:>9.3} ms   max {:>9.3} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        samples.last().map_or(0.0, |d| ms(*d)),
    );
}
