//! How a scenario reports: aligned text tables on stdout, CSV files and SVG line charts.
//!
//! Everything a scenario prints to stdout must be a pure function of its options and
//! seed, so that two runs compare byte for byte; wall-clock measurements go to stderr or
//! to their own CSV file instead.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::combinators::IntoLogRange;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// Where CSV files and charts go unless `--out` says otherwise.
pub const DEFAULT_OUT_DIR: &str = "simulations/results";

/// Chart size in pixels (width, height).
const CHART_SIZE: (u32, u32) = (900, 560);

/// Line colours, in series order (Tableau 10: ten hues that stay apart on screen and in
/// print); an eleventh series reuses the first colour.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A report that could not be written; files written before the failure stay.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Creating the output directory or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The plotting library refused to draw the chart.
    #[error("cannot draw {path}: {message}")]
    Plot {
        /// The chart file.
        path: PathBuf,
        /// The plotting library's message.
        message: String,
    },
    /// A chart was asked for with no finite point to draw.
    #[error("cannot draw {path}: no finite data point")]
    NoData {
        /// The chart file.
        path: PathBuf,
    },
}

/// A text table whose columns are padded to their widest cell; numbers align right.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new<S: ToString>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends one row (missing cells print empty, extra cells are kept).
    pub fn row<S: ToString>(mut self, cells: impl IntoIterator<Item = S>) -> Self {
        self.push(cells);
        self
    }

    /// Appends one row in place.
    pub fn push<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
    }

    /// The table as text: a header line, a rule, one line per row.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let cell = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| cell(r, i).chars().count())
                    .chain([cell(&self.headers, i).chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let line = |out: &mut String, row: &[String], numeric_right: bool| {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let c = cell(row, i);
                if i > 0 {
                    text.push_str("  ");
                }
                if numeric_right && looks_numeric(&c) {
                    let _ = write!(text, "{c:>width$}");
                } else {
                    let _ = write!(text, "{c:<width$}");
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut out, &self.headers, false);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&mut out, &rule, false);
        for row in &self.rows {
            line(&mut out, row, true);
        }
        out
    }

    /// Prints [`Table::render`] to stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }

    /// Writes the table as a CSV file (see [`write_csv`]).
    pub fn write_csv(&self, path: &Path) -> Result<(), ReportError> {
        write_csv(path, &self.headers, &self.rows)
    }
}

/// Whether a cell reads as a number (possibly with a unit suffix such as `%` or `x`).
fn looks_numeric(cell: &str) -> bool {
    let core = cell.trim_end_matches(['%', 'x', 's']).trim_end_matches("m");
    !core.is_empty() && core.parse::<f64>().is_ok()
}

/// Writes `headers` and `rows` as CSV to `path`, creating its directory; cells holding a
/// comma, quote or newline are quoted.
pub fn write_csv<H: AsRef<str>, C: AsRef<str>>(
    path: &Path,
    headers: &[H],
    rows: &[Vec<C>],
) -> Result<(), ReportError> {
    let mut text = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let joined: Vec<String> = cells.map(csv_cell).collect();
        text.push_str(&joined.join(","));
        text.push('\n');
    };
    line(&mut headers.iter().map(AsRef::as_ref));
    for row in rows {
        line(&mut row.iter().map(AsRef::as_ref));
    }
    write_file(path, text.as_bytes())
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

/// Writes `bytes` to `path`, creating the parent directory first.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| ReportError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    fs::write(path, bytes).map_err(|source| ReportError::Io {
        path: path.to_owned(),
        source,
    })
}

/// One named line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// `(x, y)` points, drawn in the order given; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from a name and its points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// How an axis is scaled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    /// Evenly spaced values.
    #[default]
    Linear,
    /// Evenly spaced powers of ten; every value must be positive.
    Log,
}

/// A line chart: title, axis labels and scales, and the lines with a legend.
#[derive(Clone, Debug)]
pub struct LineChart<'a> {
    /// The caption above the plot.
    pub title: &'a str,
    /// The x axis label.
    pub x_label: &'a str,
    /// The y axis label.
    pub y_label: &'a str,
    /// How x is scaled.
    pub x_scale: Scale,
    /// How y is scaled.
    pub y_scale: Scale,
    /// A horizontal reference line (e.g. the ideal value), drawn dashed-grey and labelled.
    pub reference: Option<(&'a str, f64)>,
    /// The lines.
    pub series: &'a [Series],
}

impl<'a> LineChart<'a> {
    /// A chart with linear axes and no reference line.
    pub fn new(title: &'a str, x_label: &'a str, y_label: &'a str, series: &'a [Series]) -> Self {
        LineChart {
            title,
            x_label,
            y_label,
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            reference: None,
            series,
        }
    }

    /// The same chart with a logarithmic x axis.
    pub fn log_x(mut self) -> Self {
        self.x_scale = Scale::Log;
        self
    }

    /// The same chart with a logarithmic y axis.
    pub fn log_y(mut self) -> Self {
        self.y_scale = Scale::Log;
        self
    }

    /// The same chart with a labelled horizontal reference line at `y`.
    pub fn reference(mut self, label: &'a str, y: f64) -> Self {
        self.reference = Some((label, y));
        self
    }

    /// Draws the chart as an SVG file at `path`, creating its directory.
    pub fn write_svg(&self, path: &Path) -> Result<(), ReportError> {
        let usable = |scale: Scale, v: f64| v.is_finite() && (scale == Scale::Linear || v > 0.0);
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|&(x, y)| usable(self.x_scale, x) && usable(self.y_scale, y))
            .chain(self.reference.map(|(_, y)| (f64::NAN, y)))
            .collect();
        let xs = points.iter().map(|p| p.0).filter(|x| x.is_finite());
        let ys = points
            .iter()
            .map(|p| p.1)
            .filter(|y| usable(self.y_scale, *y));
        let (Some(x_range), Some(y_range)) = (
            padded_range(xs, self.x_scale, false),
            padded_range(ys, self.y_scale, true),
        ) else {
            return Err(ReportError::NoData {
                path: path.to_owned(),
            });
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
            let result = match (self.x_scale, self.y_scale) {
                (Scale::Linear, Scale::Linear) => self.draw(&root, x_range, y_range),
                (Scale::Log, Scale::Linear) => self.draw(&root, x_range.log_scale(), y_range),
                (Scale::Linear, Scale::Log) => self.draw(&root, x_range, y_range.log_scale()),
                (Scale::Log, Scale::Log) => {
                    self.draw(&root, x_range.log_scale(), y_range.log_scale())
                }
            };
            result
                .and_then(|()| root.present().map_err(|e| e.to_string()))
                .map_err(|message| ReportError::Plot {
                    path: path.to_owned(),
                    message,
                })?;
        }
        write_file(path, svg.as_bytes())
    }

    fn draw<DB, X, Y>(&self, root: &DrawingArea<DB, Shift>, x: X, y: Y) -> Result<(), String>
    where
        DB: DrawingBackend,
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        if let Some((label, level)) = self.reference {
            let (lo, hi) = x_bounds(self.series);
            let grey = RGBColor(90, 90, 90);
            chart
                .draw_series(DashedLineSeries::new(
                    [(lo, level), (hi, level)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
        }
        for (i, series) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = series
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .filter(|&(x, y)| {
                    (self.x_scale == Scale::Linear || x > 0.0)
                        && (self.y_scale == Scale::Linear || y > 0.0)
                })
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(series.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

/// The smallest and largest finite x over all series (0..1 when there is none).
fn x_bounds(series: &[Series]) -> (f64, f64) {
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| x.is_finite());
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if lo <= hi { (lo, hi) } else { (0.0, 1.0) }
}

/// The range of `values` with a margin (5 % of the span, or a factor on a log axis);
/// `from_zero` starts a linear axis at 0 when every value is positive.
fn padded_range(
    values: impl Iterator<Item = f64>,
    scale: Scale,
    from_zero: bool,
) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return None;
    }
    Some(match scale {
        Scale::Log => (lo / 1.5)..(hi * 1.5),
        Scale::Linear => {
            let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
            let lo = if from_zero && lo >= 0.0 {
                0.0
            } else {
                lo - span * 0.05
            };
            lo..(hi + span * 0.05)
        }
    })
}

/// Formats `x` with `decimals` decimals; the same bits always print the same text.
pub fn fixed(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "-".to_owned()
    } else {
        format!("{x:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_and_right_aligns_numbers() {
        let text = Table::new(["name", "value"])
            .row(["a", "1.5"])
            .row(["longer", "10"])
            .render();
        assert_eq!(
            text,
            "name    value\n------  -----\na         1.5\nlonger     10\n"
        );
    }

    #[test]
    fn csv_quotes_only_cells_that_need_it() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn padded_range_has_room_and_handles_single_values() {
        assert_eq!(
            padded_range([2.0].into_iter(), Scale::Linear, true),
            Some(0.0..2.1)
        );
        assert_eq!(padded_range(std::iter::empty(), Scale::Linear, true), None);
        let r = padded_range([1.0, 100.0].into_iter(), Scale::Log, false).unwrap();
        assert!(r.start > 0.0 && r.start < 1.0 && r.end > 100.0);
    }
}
