//! `crypy report`: one self-contained HTML file (inline SVG, no script, nothing fetched) with
//! a run's prices and trades, equity, drawdown, strategy scoreboard and template changes.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use crypy_core::time::format_utc;
use crypy_core::Side;
use crypy_dataflow::summary::RunSummary;

use crate::args::ReportArgs;
use crate::out;

/// Points a chart draws at most: longer series keep each bucket's first, lowest and highest
/// value, so spikes stay visible.
const MAX_POINTS: usize = 1_500;
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 260.0;
const PAD: f64 = 48.0;
/// Room for the value labels left of a chart.
const LEFT: f64 = 88.0;

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let summary = super::sim::summary_of(&args.dir.data_dir, args.run)?;
    let html = render(&summary, &args.dir.data_dir);
    let tmp = args.out.with_extension("html.partial");
    std::fs::write(&tmp, html).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote the report of run {} ({} candles, {} fills) to {}",
        summary.run,
        out::count(summary.candles),
        out::count(summary.fills),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The page's start up to its heading: one style sheet, nothing fetched.
pub(super) fn page_head(title: &str) -> String {
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f4f4f4}} td:first-child,th:first-child{{text-align:left}}
.chart{{display:block;margin:4px 0 16px}} .area{{fill:#fafafa;stroke:#ddd}} .axis{{font-size:11px;fill:#666}}
.price{{fill:none;stroke:#345;stroke-width:1}} .equity{{fill:none;stroke:#2a7;stroke-width:1.5}} .drawdown{{fill:none;stroke:#c33;stroke-width:1}}
.baseline{{fill:none;stroke:#888;stroke-width:1.5}} .bar-in{{fill:#9ab}} .bar-out{{fill:#2a7}} .bar-base{{fill:#bbb}}
.entry{{fill:#1a8f3c}} .exit{{fill:#c0392b}} .change{{fill:#e67e22}} .axisline{{stroke:#999}} td.why{{text-align:left;font-size:12px}}
</style></head><body><h1>{title}</h1>"#,
        title = escape(title)
    )
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// At most [`MAX_POINTS`] points of `series`, keeping each bucket's extremes.
fn thin(series: &[(i64, f64)]) -> Vec<(i64, f64)> {
    if series.len() <= MAX_POINTS {
        return series.to_vec();
    }
    let bucket = series.len().div_ceil(MAX_POINTS / 3);
    let mut out = Vec::with_capacity(MAX_POINTS);
    for chunk in series.chunks(bucket) {
        let lowest = chunk.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("chunks are not empty");
        let highest = chunk.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("chunks are not empty");
        let mut keep = vec![chunk[0], *lowest, *highest];
        keep.sort_by_key(|p| p.0);
        keep.dedup();
        out.extend(keep);
    }
    out
}

/// Maps times and values onto the chart's area.
struct Frame {
    t0: i64,
    t1: i64,
    lo: f64,
    hi: f64,
}

impl Frame {
    fn of(series: &[(i64, f64)]) -> Option<Frame> {
        let (first, last) = (series.first()?, series.last()?);
        let lo = series.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = series.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 1.0, hi + 1.0) };
        Some(Frame { t0: first.0, t1: last.0.max(first.0 + 1), lo, hi })
    }

    fn x(&self, t: i64) -> f64 {
        LEFT + (t - self.t0) as f64 / (self.t1 - self.t0) as f64 * (WIDTH - LEFT - PAD)
    }

    fn y(&self, v: f64) -> f64 {
        HEIGHT - PAD - (v - self.lo) / (self.hi - self.lo) * (HEIGHT - 2.0 * PAD)
    }
}

/// A line chart of `series` with axis labels, and `marks` drawn on it (time, value, class).
pub(super) fn line_chart(
    title: &str,
    class: &str,
    series: &[(i64, f64)],
    marks: &[(i64, f64, &str)],
    unit: &str,
) -> String {
    let Some(frame) = Frame::of(series) else {
        return format!("<h3>{}</h3><p>nothing to draw</p>", escape(title));
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<h3>{}</h3><svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">"#,
        escape(title)
    );
    let (left, right, top, bottom) = (LEFT, WIDTH - PAD, PAD, HEIGHT - PAD);
    let _ =
        write!(svg, r#"<rect class="area" x="{left}" y="{top}" width="{}" height="{}"/>"#, right - left, bottom - top);
    for (v, y) in [(frame.hi, top), (frame.lo, bottom)] {
        let _ = write!(
            svg,
            r#"<text class="axis" x="{}" y="{:.1}" text-anchor="end">{v:.2}{unit}</text>"#,
            left - 4.0,
            y + 4.0
        );
    }
    for (t, x, anchor) in [(frame.t0, left, "start"), (frame.t1, right, "end")] {
        let _ = write!(
            svg,
            r#"<text class="axis" x="{x}" y="{}" text-anchor="{anchor}">{}</text>"#,
            bottom + 16.0,
            format_utc(t)
        );
    }
    let points: Vec<String> =
        thin(series).iter().map(|(t, v)| format!("{:.1},{:.1}", frame.x(*t), frame.y(*v))).collect();
    let _ = write!(svg, r#"<polyline class="{class}" points="{}"/>"#, points.join(" "));
    for (t, v, mark) in marks {
        let (x, y) = (frame.x(*t), frame.y(*v));
        let shape = if *mark == "entry" {
            format!("{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}", y - 6.0, x - 5.0, y + 4.0, x + 5.0, y + 4.0)
        } else {
            format!("{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}", y + 6.0, x - 5.0, y - 4.0, x + 5.0, y - 4.0)
        };
        let _ = write!(svg, r#"<polygon class="{mark}" points="{shape}"><title>{mark} at {v:.2}</title></polygon>"#);
    }
    svg.push_str("</svg>");
    svg
}

fn drawdown(equity: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut peak = f64::NEG_INFINITY;
    equity
        .iter()
        .map(|(t, e)| {
            peak = peak.max(*e);
            (*t, if peak > 0.0 { (e / peak - 1.0) * 100.0 } else { 0.0 })
        })
        .collect()
}

/// Template changes as ticks on the run's time line.
fn timeline(s: &RunSummary) -> String {
    let changes = &s.series.template_changes;
    let span: Vec<(i64, f64)> = s.series.equity.iter().map(|(t, _)| (*t, 0.0)).collect();
    let mut html = String::from("<h3>Template changes</h3>");
    if let Some(frame) = Frame::of(&span) {
        let _ = write!(html, r#"<svg class="chart" viewBox="0 0 {WIDTH} 60" width="{WIDTH}" height="60" role="img">"#);
        let _ = write!(html, r#"<line class="axisline" x1="{LEFT}" y1="30" x2="{}" y2="30"/>"#, WIDTH - PAD);
        for (t, what, reason) in changes {
            let x = frame.x((*t).clamp(frame.t0, frame.t1));
            let _ = write!(
                html,
                r#"<circle class="change" cx="{x:.1}" cy="30" r="5"><title>{} — {}</title></circle>"#,
                escape(what),
                escape(reason)
            );
        }
        html.push_str("</svg>");
    }
    html.push_str("<table><tr><th>time (UTC)</th><th>what</th><th>why</th></tr>");
    for (t, what, reason) in changes {
        let _ =
            write!(html, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", format_utc(*t), escape(what), escape(reason));
    }
    html.push_str("</table>");
    html
}

fn render(s: &RunSummary, dir: &Path) -> String {
    let money = |m: crypy_core::Money| m.value().round_dp(2).to_string();
    let mut html = String::new();
    html.push_str(&page_head(&format!("crypy report: run {}", s.run)));
    let _ = write!(html, "<p>{}</p>", escape(&dir.display().to_string()));
    let _ = write!(
        html,
        "<table><tr><th>return</th><th>start equity</th><th>end equity</th><th>max drawdown</th><th>orders</th><th>fills</th><th>positions closed</th><th>fees</th><th>candles</th></tr>\
         <tr><td>{:+.2}%</td><td>{} {asset}</td><td>{} {asset}</td><td>{:.2}%</td><td>{}</td><td>{}</td><td>{}</td><td>{} {asset}</td><td>{}</td></tr></table>",
        s.total_return() * 100.0,
        money(s.start_equity),
        money(s.end_equity),
        s.max_drawdown * 100.0,
        s.orders,
        s.fills,
        s.positions,
        money(s.fees),
        s.candles,
        asset = s.trusted,
    );
    html.push_str("<h2>Prices, entries and exits</h2>");
    for (pair, closes) in &s.series.closes {
        let marks: Vec<(i64, f64, &str)> = s
            .series
            .fills
            .iter()
            .filter(|f| f.1 == *pair)
            .map(|(t, _, side, price, _)| (*t, *price, if *side == Side::Buy { "entry" } else { "exit" }))
            .collect();
        html.push_str(&line_chart(&pair.to_string(), "price", closes, &marks, ""));
    }
    html.push_str("<h2>Equity and drawdown</h2>");
    html.push_str(&line_chart(&format!("equity ({})", s.trusted), "equity", &s.series.equity, &[], ""));
    html.push_str(&line_chart("drawdown from the peak", "drawdown", &drawdown(&s.series.equity), &[], "%"));
    html.push_str("<h2>Strategies</h2><table><tr><th>strategy</th><th>positions closed</th><th>realized P&amp;L</th><th>fees</th></tr>");
    let mut strategies: Vec<_> = s.per_strategy.iter().collect();
    strategies.sort_by(|a, b| b.1.pnl.cmp(&a.1.pnl).then(a.0.cmp(b.0)));
    for (name, r) in strategies {
        let _ = write!(
            html,
            r#"<tr class="strategy"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(name),
            r.positions,
            money(r.pnl),
            money(r.fees)
        );
    }
    html.push_str("</table>");
    html.push_str(
        "<h2>Scoreboard: each pair's variants</h2><table><tr><th>pair</th><th>variant</th><th>proposed</th>\
         <th>accepted</th><th>positions closed</th><th>won</th><th>lost</th><th>realized P&amp;L</th>\
         <th>P&amp;L drawdown</th></tr>",
    );
    let mut board: Vec<_> = s.scoreboard.iter().collect();
    board.sort_by(|a, b| a.0 .0.cmp(&b.0 .0).then(b.1.pnl.total_cmp(&a.1.pnl)).then(a.0 .1.cmp(&b.0 .1)));
    for ((pair, variant), v) in board {
        let _ = write!(
            html,
            r#"<tr class="score"><td>{pair}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2} {}</td><td>{:.2}</td></tr>"#,
            escape(variant),
            v.proposed,
            v.accepted,
            v.positions,
            v.wins,
            v.losses,
            v.pnl,
            pair.quote,
            v.drawdown
        );
    }
    html.push_str("</table>");
    html.push_str(&timeline(s));
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_series_are_thinned_keeping_their_extremes() {
        let series: Vec<(i64, f64)> =
            (0..100_000).map(|i| (i, if i == 54_321 { 1e6 } else { (i % 7) as f64 })).collect();
        let thinned = thin(&series);
        assert!(thinned.len() <= MAX_POINTS, "{}", thinned.len());
        assert!(thinned.iter().any(|p| p.1 == 1e6), "the spike survives");
        assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0), "in time order");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape(r#"<b>"x" & y</b>"#), "&lt;b&gt;&quot;x&quot; &amp; y&lt;/b&gt;");
    }
}
