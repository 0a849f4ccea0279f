//! Chart of a run or a sweep: upstream calls per key against fleet size for each
//! strategy, and the distribution of propagation latency, as SVG or PNG (labels need a
//! TrueType font on the system).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Report;

/// Fonts tried for the labels.
const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Writes the chart for `reports` to `path`: `.svg` or `.png`.
pub fn plot(path: &std::path::Path, reports: &[Report]) -> anyhow::Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let size = (1100, 450);
    if !matches!(ext.as_str(), "svg" | "png") {
        anyhow::bail!("--plot writes .svg or .png; got '{}'", path.display());
    }
    register_font()?;
    if ext == "svg" {
        draw(SVGBackend::new(path, size).into_drawing_area(), reports)
    } else {
        draw(BitMapBackend::new(path, size).into_drawing_area(), reports)
    }
}

/// Chart text is laid out with ab_glyph (pure Rust), which needs a TrueType font.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let Some(font) = FONT_FILES.iter().find_map(|f| std::fs::read(f).ok()) else {
            return false;
        };
        // ab_glyph keeps the font for the life of the process.
        let font: &'static [u8] = Box::leak(font.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, font).is_ok()
    });
    anyhow::ensure!(
        ok,
        "charts need a TrueType font for their labels (e.g. Debian's fonts-dejavu-core); none was found in {FONT_FILES:?}"
    );
    Ok(())
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    reports: &[Report],
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(550);
    draw_upstream_per_key(&left, reports)?;
    draw_propagation(&right, propagation_samples(reports))?;
    root.present().map_err(err)?;
    Ok(())
}

/// The samples of the largest mesh run (else of any run that has samples).
fn propagation_samples(reports: &[Report]) -> &[f64] {
    reports
        .iter()
        .filter(|r| !r.propagation_samples.is_empty())
        .max_by_key(|r| (r.strategy == "mesh", r.nodes))
        .map(|r| r.propagation_samples.as_slice())
        .unwrap_or(&[])
}

/// Upstream calls per key against fleet size, a line per strategy.
fn draw_upstream_per_key<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    reports: &[Report],
) -> anyhow::Result<()> {
    let max_n = reports.iter().map(|r| r.nodes).max().unwrap_or(1) as f64;
    let max_upk = reports
        .iter()
        .map(|r| r.upstream_per_key)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("upstream calls per key vs nodes", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..max_n * 1.05, 0.0..max_upk)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("nodes")
        .y_desc("upstream calls / key")
        .draw()
        .map_err(err)?;
    for (strategy, color) in [("local", RED), ("broadcast", BLUE), ("mesh", GREEN)] {
        let pts = upstream_points(reports, strategy);
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(strategy)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// `strategy`'s runs as (nodes, upstream calls per key), by fleet size.
fn upstream_points(reports: &[Report], strategy: &str) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = reports
        .iter()
        .filter(|r| r.strategy == strategy)
        .map(|r| (r.nodes as f64, r.upstream_per_key))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// Bars of the histogram of propagation latency.
const BUCKETS: usize = 20;

/// The distribution of propagation latency, as a histogram.
fn draw_propagation<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    samples: &[f64],
) -> anyhow::Result<()> {
    let max_ms = samples.iter().copied().fold(1.0, f64::max);
    let width = max_ms / BUCKETS as f64;
    let counts = bucket_counts(samples, width);
    let max_count = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut hist = ChartBuilder::on(area)
        .caption(
            "propagation latency (fetch -> every node)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..max_ms * 1.05, 0u32..max_count + 1)
        .map_err(err)?;
    hist.configure_mesh()
        .x_desc("ms")
        .y_desc("keys")
        .draw()
        .map_err(err)?;
    hist.draw_series(counts.iter().enumerate().map(|(i, c)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width, *c)], GREEN.mix(0.6).filled())
    }))
    .map_err(err)?;
    Ok(())
}

/// How many samples fall in each of [`BUCKETS`] buckets `width` wide; the last takes
/// the largest too.
fn bucket_counts(samples: &[f64], width: f64) -> Vec<u32> {
    let mut counts = vec![0u32; BUCKETS];
    for s in samples {
        let i = ((s / width) as usize).min(BUCKETS - 1);
        counts[i] += 1;
    }
    counts
}
