//! A scenario's timeline as SVG: the rate offered and answered per tier above, each
//! tier's per-second p99 (log scale) below, with the load phases marked on both.

use std::path::Path;

use chorus_client::Tier;
use plotters::coord::Shift;
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use super::report::ScenarioSummary;

const SIZE: (u32, u32) = (1100, 820);
/// One colour per tier, most urgent first (as `Tier::ALL`).
const TIER_COLOURS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
];
const PHASE_LINE: RGBColor = RGBColor(120, 120, 120);

/// One tier's lines: offered and ok per second, or p99 per second and its budget.
struct TierLines {
    tier: Tier,
    colour: RGBColor,
    main: Vec<(f64, f64)>,
    offered: Vec<(f64, f64)>,
    budget_ms: f64,
}

/// Draws `summary`'s timeline into an SVG file at `path`.
pub fn write_svg(summary: &ScenarioSummary, path: &Path) -> Result<(), String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(SIZE.1 / 2);
        draw_rates(summary, &top).map_err(|e| e.to_string())?;
        draw_p99(summary, &bottom).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    std::fs::write(path, svg).map_err(|e| e.to_string())
}

/// A phase's label: its name, and its multiple when the name does not say it.
fn phase_label(name: &str, multiple: f64) -> String {
    let plain = format!("{multiple}x");
    if name == plain {
        plain
    } else {
        format!("{name} ({plain})")
    }
}

/// `points` (one per second, in order) cut where a second is missing.
fn runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    for &p in points {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|last| p.0 - last.0 <= 1.0 + 1e-9) => {
                run.push(p);
            }
            _ => runs.push(vec![p]),
        }
    }
    runs
}

/// The tiers in the run, with their colours.
fn tiers(summary: &ScenarioSummary) -> Vec<(Tier, RGBColor)> {
    Tier::ALL
        .iter()
        .zip(TIER_COLOURS)
        .filter(|(t, _)| summary.tiers.contains_key(t.as_str()))
        .map(|(t, c)| (*t, c))
        .collect()
}

fn x_end(summary: &ScenarioSummary) -> f64 {
    (summary.timeline.len() as f64)
        .max(summary.load_seconds)
        .max(1.0)
}

/// A point per second, at its middle.
fn per_second(summary: &ScenarioSummary, value: impl Fn(usize) -> Option<f64>) -> Vec<(f64, f64)> {
    (0..summary.timeline.len())
        .filter_map(|s| value(s).map(|v| (s as f64 + 0.5, v)))
        .collect()
}

type Chart<'a, 'b, Y> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

/// The tiers' legend in the upper right corner.
fn draw_legend<'a, Y>(
    chart: &mut Chart<'a, 'a, Y>,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>>
where
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

fn mark_phases<Y>(
    summary: &ScenarioSummary,
    chart: &mut Chart<'_, '_, Y>,
    y: (f64, f64),
    labels: bool,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>>
where
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for p in &summary.phases {
        if p.start_s > 0.0 {
            chart.draw_series(DashedLineSeries::new(
                [(p.start_s, y.0), (p.start_s, y.1)],
                5,
                4,
                PHASE_LINE.stroke_width(1),
            ))?;
        }
        if labels {
            chart.draw_series(std::iter::once(Text::new(
                phase_label(&p.name, p.multiple),
                (p.start_s + 0.2, y.1),
                ("sans-serif", 13).into_font().color(&PHASE_LINE),
            )))?;
        }
    }
    let end = summary.load_seconds;
    chart.draw_series(DashedLineSeries::new(
        [(end, y.0), (end, y.1)],
        2,
        3,
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}

fn draw_rates(
    summary: &ScenarioSummary,
    area: &DrawingArea<SVGBackend<'_>, Shift>,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let tiers = tiers(summary);
    let series: Vec<TierLines> = tiers
        .iter()
        .map(|&(tier, colour)| {
            let pick = |f: fn(&super::report::SecondTier) -> u64| {
                per_second(summary, |s| {
                    summary.timeline[s]
                        .tiers
                        .get(tier.as_str())
                        .map(|t| f(t) as f64)
                })
            };
            TierLines {
                tier,
                colour,
                main: pick(|t| t.ok),
                offered: pick(|t| t.offered),
                budget_ms: summary.tiers[tier.as_str()].budget_ms,
            }
        })
        .collect();
    let y_max = series
        .iter()
        .flat_map(|l| l.offered.iter().chain(&l.main))
        .map(|p| p.1)
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: requests/s per tier (S = {:.0}/s; dashed: offered, solid: ok)",
                summary.scenario.as_str(),
                summary.saturation_rate
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_end(summary), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds (by due time)")
        .y_desc("requests/s")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    mark_phases(summary, &mut chart, (0.0, y_max), true)?;
    for TierLines {
        tier,
        colour,
        main,
        offered,
        ..
    } in series
    {
        chart.draw_series(DashedLineSeries::new(offered, 6, 3, colour.stroke_width(1)))?;
        chart
            .draw_series(LineSeries::new(main, colour.stroke_width(2)))?
            .label(tier.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    draw_legend(&mut chart)
}

fn draw_p99(
    summary: &ScenarioSummary,
    area: &DrawingArea<SVGBackend<'_>, Shift>,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let tiers = tiers(summary);
    let series: Vec<TierLines> = tiers
        .iter()
        .map(|&(tier, colour)| TierLines {
            tier,
            colour,
            main: per_second(summary, |s| {
                summary.timeline[s]
                    .tiers
                    .get(tier.as_str())
                    .and_then(|t| t.p99_ms)
                    .filter(|p| *p > 0.0)
            }),
            offered: Vec::new(),
            budget_ms: summary.tiers[tier.as_str()].budget_ms,
        })
        .collect();
    let values = series
        .iter()
        .flat_map(|l| l.main.iter().map(|p| p.1).chain([l.budget_ms]));
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo / 2.0, hi * 2.0)
    } else {
        (0.1, 1000.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            "p99 ms per tier per second (dotted: the tier's budget)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_end(summary), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds (by due time)")
        .y_desc("p99 ms")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    mark_phases(summary, &mut chart, (lo, hi), false)?;
    let end = x_end(summary);
    for TierLines {
        tier,
        colour,
        main: points,
        budget_ms: budget,
        ..
    } in series
    {
        chart.draw_series(DashedLineSeries::new(
            [(0.0, budget), (end, budget)],
            2,
            4,
            colour.mix(0.6).stroke_width(1),
        ))?;
        // A second without a successful answer has no p99: the line breaks there
        // rather than bridge it, and a lone second shows as a dot.
        let runs = runs(&points);
        for run in &runs {
            if run.len() == 1 {
                chart.draw_series(std::iter::once(Circle::new(run[0], 2, colour.filled())))?;
            }
        }
        chart
            .draw_series(
                runs.into_iter()
                    .map(|run| PathElement::new(run, colour.stroke_width(2))),
            )?
            .label(tier.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    draw_legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_break_where_a_second_is_missing() {
        let points = [(0.5, 1.0), (1.5, 2.0), (3.5, 3.0), (5.5, 4.0), (6.5, 5.0)];
        let runs = runs(&points);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0], [(0.5, 1.0), (1.5, 2.0)]);
        assert_eq!(runs[1], [(3.5, 3.0)]);
        assert!(super::runs(&[]).is_empty());
    }

    #[test]
    fn a_phase_named_by_its_multiple_is_not_labelled_twice() {
        assert_eq!(phase_label("1.5x", 1.5), "1.5x");
        assert_eq!(phase_label("spike", 5.0), "spike (5x)");
    }
}
