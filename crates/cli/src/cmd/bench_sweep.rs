//! `crypy bench sweep`: the SMA-crossover sweep timed on one series, as vectorbt's peer
//! script times its own.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use crypy_agents::sweep::{sweep, Fill, SweepConfig, SweepGrid};
use serde_json::json;

use crate::args::SweepArgs;
use crate::out;

/// `FROM:TO:STEP` or `FROM..TO/STEP` (inclusive, step 1 when left out), or `A,B,C`.
pub fn parse_windows(text: &str) -> anyhow::Result<Vec<u32>> {
    if let Some((from, rest)) = text.split_once(':') {
        let (to, step) = rest.split_once(':').unwrap_or((rest, "1"));
        return parse_windows(&format!("{from}..{to}/{step}")).map_err(|_| {
            anyhow::anyhow!("`{text}` is not FROM:TO:STEP with whole numbers of bars, FROM ≤ TO, STEP ≥ 1")
        });
    }
    let number = |s: &str| -> anyhow::Result<u32> {
        s.trim().parse().with_context(|| format!("`{s}` in `{text}` is not a whole number of bars"))
    };
    let windows = if let Some((from, rest)) = text.split_once("..") {
        let (to, step) = match rest.split_once('/') {
            Some((to, step)) => (number(to)?, number(step)?),
            None => (number(rest)?, 1),
        };
        let from = number(from)?;
        anyhow::ensure!(step > 0, "`{text}`: the step must be at least 1");
        anyhow::ensure!(from <= to, "`{text}`: the range is empty");
        (from..=to).step_by(step as usize).collect()
    } else {
        text.split(',').map(number).collect::<anyhow::Result<Vec<_>>>()?
    };
    anyhow::ensure!(windows.iter().all(|&w| w > 0), "`{text}`: windows must be at least 1 bar");
    Ok(windows)
}

pub fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let grid = SweepGrid {
        fast: parse_windows(&args.fast).context("--fast")?,
        slow: parse_windows(&args.slow).context("--slow")?,
    };
    let candles = match &args.csv {
        Some(file) => crypy_eventstore::import::read_candles(file, &"XBT/USD".parse()?, args.interval, None)?,
        None => super::sim::bundled_candles()?,
    };
    let source = args.csv.as_ref().map_or("the bundled Kraken XBT/EUR 15m quarter".into(), |p| p.display().to_string());
    anyhow::ensure!(!candles.is_empty(), "{source}: no candles");
    // Through the exact decimal's text: Rust's parse is correctly rounded, as Python's float()
    // is, so the sweep starts from the very doubles vectorbt reads.
    let to_f64 = |d: &dyn std::fmt::Display| d.to_string().parse::<f64>().expect("a decimal's text is a float");
    let open: Vec<f64> = candles.iter().map(|c| to_f64(&c.open)).collect();
    let close: Vec<f64> = candles.iter().map(|c| to_f64(&c.close)).collect();
    let fill = if args.fill == "next-open" { Fill::NextOpen } else { Fill::Close };
    let cfg = SweepConfig { fees: args.fees, init_cash: args.cash, fill, threads: args.threads };

    let mut times = Vec::with_capacity(args.repeat as usize);
    let mut results = Vec::new();
    for _ in 0..args.repeat {
        let started = Instant::now();
        results = sweep(&open, &close, &grid, &cfg)?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    let steps = results.len() as f64 * close.len() as f64;
    let best = results.iter().max_by(|a, b| a.total_return.total_cmp(&b.total_return)).expect("the grid is not empty");
    let threads = match args.threads {
        0 => "auto".to_string(),
        n => n.to_string(),
    };
    if args.json {
        let combinations: Vec<_> = results
            .iter()
            .map(|r| json!({"fast": r.fast, "slow": r.slow, "total_return": r.total_return, "orders": r.orders}))
            .collect();
        println!(
            "{}",
            json!({
                "bars": close.len(), "combinations": results.len(), "fees": args.fees, "init_cash": args.cash,
                "fill": args.fill, "threads": threads, "repeat": args.repeat,
                "seconds": seconds, "min_seconds": times[0], "bar_steps_per_s": steps / seconds,
                "best": {"fast": best.fast, "slow": best.slow, "total_return": best.total_return, "orders": best.orders},
                "results": combinations,
            })
        );
    } else {
        println!(
            "{} pairs × {} bars of {source} in {:.4} s (median of {}, threads {threads}): {:.1} M bar-steps/s",
            results.len(),
            out::count(close.len() as u64),
            seconds,
            args.repeat,
            steps / seconds / 1e6
        );
        println!(
            "best: fast {} slow {}: total return {:+.4} % with {} orders (fees {}, fills at the {})",
            best.fast,
            best.slow,
            best.total_return * 100.0,
            best.orders,
            args.fees,
            args.fill
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_windows;

    #[test]
    fn windows_are_ranges_or_lists() {
        assert_eq!(parse_windows("5..50/5").unwrap(), (5..=50).step_by(5).collect::<Vec<_>>());
        assert_eq!(parse_windows("5:50:5").unwrap(), (5..=50).step_by(5).collect::<Vec<_>>());
        assert_eq!(parse_windows("3..5").unwrap(), vec![3, 4, 5]);
        assert_eq!(parse_windows("3:5").unwrap(), vec![3, 4, 5]);
        assert_eq!(parse_windows("7, 9,30").unwrap(), vec![7, 9, 30]);
        for bad in ["", "0..5", "5..3", "1..9/0", "a,b", "1..x", "-3", "5:1:1", "1:9:0", "1:2:3:4"] {
            assert!(parse_windows(bad).is_err(), "{bad}");
        }
    }
}
