//! The plot of issue #7: per-packet cost against policy size, as a self-contained SVG written by
//! hand (std only, deterministic: the same CSV gives the same bytes).
//!
//! Input is the datapath benchmark's CSV, `identities,conduits,case,ns,floor_ns`. One panel per
//! conduit count, side by side and sharing the y scale; x is identities on a log10 scale, y is
//! ns / floor_ns (the cost as a multiple of an empty XDP_PASS program measured in the same run).
//! One line per case, coloured the same in every panel.
//!
//! A row with 0 identities and 0 conduits is a reference measured once rather than against
//! policy size (xdp-filter on the same frame, in the same run): a labelled horizontal line
//! across every panel, like the empty program's own line at 1×.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::Path,
};

use anyhow::{Context as _, Result, bail};

const HEADER: [&str; 5] = ["identities", "conduits", "case", "ns", "floor_ns"];
const TITLE: &str = "Per-packet cost against policy size (× empty XDP program)";
const GOAL: f64 = 4.0;
const GOAL_LABEL: &str = "goal: established ≤ 4× floor";

/// Okabe–Ito (without its yellow, too pale on white), then Paul Tol's "muted" colours. The
/// marker shape cycles with a different period (5), so cases 13 and up still differ from 1–12.
const PALETTE: [&str; 12] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#882255",
    "#999933", "#332288", "#44AA99", "#CC6677",
];

// Layout, in SVG user units (px).
const WIDTH: f64 = 960.0;
const MARGIN_LEFT: f64 = 36.0; // room for the rotated y-axis label
const MARGIN_RIGHT: f64 = 16.0;
const PANEL_GAP: f64 = 16.0;
const PANEL_TITLE_Y: f64 = 66.0;
const PLOT_TOP: f64 = 80.0;
const PLOT_HEIGHT: f64 = 300.0;
const PLOT_INSET_LEFT: f64 = 40.0; // y tick labels, inside each panel
const PLOT_INSET_RIGHT: f64 = 8.0;
const X_PAD: f64 = 24.0; // keeps the smallest and largest size off the panel's edges
const LEGEND_GAP: f64 = 60.0;
const LEGEND_ROW: f64 = 20.0;
const LEGEND_FONT: f64 = 12.0;
/// A generous estimate of the average glyph width of a 12 px sans-serif font.
const CHAR_WIDTH: f64 = 6.8;

struct Row {
    identities: u64,
    conduits: u64,
    case: String,
    ns: f64,
    floor_ns: f64,
}

/// Parses the benchmark CSV. The case name is everything between the second and the
/// second-to-last comma, so a case name may itself contain commas (the benchmark's do); a case
/// name in double quotes (RFC 4180) is unquoted. Errors name the line (1-based).
fn parse(csv: &str) -> Result<Vec<Row>> {
    let mut lines = csv
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_start_matches('\u{feff}').trim()))
        .filter(|(_, l)| !l.is_empty());
    let Some((n, header)) = lines.next() else {
        bail!(
            "the CSV is empty (expected the header `{}`)",
            HEADER.join(",")
        );
    };
    if !header.split(',').map(str::trim).eq(HEADER) {
        bail!(
            "line {n}: expected the header `{}`, found `{header}`",
            HEADER.join(",")
        );
    }
    let mut rows = Vec::new();
    let mut seen: BTreeMap<(u64, u64, String), usize> = BTreeMap::new();
    for (n, line) in lines {
        // Not trimmed yet: the spaces after commas inside a case name belong to it.
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < HEADER.len() {
            bail!(
                "line {n}: expected {} columns ({}), found {}: `{line}`",
                HEADER.len(),
                HEADER.join(","),
                fields.len()
            );
        }
        let last = fields.len() - 1;
        let note = if fields.len() > HEADER.len() {
            " (the line has more than 5 columns: commas go to the case name, so the last two must be ns and floor_ns)"
        } else {
            ""
        };
        let whole = |col: usize| -> Result<u64> {
            let f = fields[col].trim();
            f.parse().map_err(|_| {
                anyhow::anyhow!("line {n}: {} `{f}` is not a whole number", HEADER[col])
            })
        };
        let real = |col: usize, name: &str| -> Result<f64> {
            let f = fields[col].trim();
            match f.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => bail!("line {n}: {name} `{f}` is not a number{note}"),
            }
        };
        let identities = whole(0)?;
        let conduits = whole(1)?;
        let ns = real(last - 1, "ns")?;
        let floor_ns = real(last, "floor_ns")?;
        let mut case = fields[2..last - 1].join(",").trim().to_owned();
        if case.len() >= 2 && case.starts_with('"') && case.ends_with('"') {
            case = case[1..case.len() - 1].replace("\"\"", "\"");
        }
        if identities == 0 && conduits != 0 {
            bail!(
                "line {n}: identities must be at least 1 (the x axis is logarithmic), or both identities and conduits 0 for a reference line"
            );
        }
        if case.is_empty() {
            bail!("line {n}: the case name is empty");
        }
        if ns < 0.0 {
            bail!("line {n}: ns `{}` is negative", fields[last - 1].trim());
        }
        if floor_ns <= 0.0 {
            bail!(
                "line {n}: floor_ns `{}` must be above 0",
                fields[last].trim()
            );
        }
        if let Some(first) = seen.insert((identities, conduits, case.clone()), n) {
            bail!("line {n}: the same identities, conduits and case as line {first}");
        }
        rows.push(Row {
            identities,
            conduits,
            case,
            ns,
            floor_ns,
        });
    }
    if rows.is_empty() {
        bail!("the CSV has a header but no data rows");
    }
    Ok(rows)
}

/// Renders the benchmark CSV (`identities,conduits,case,ns,floor_ns`) as an SVG document.
pub fn svg(csv: &str) -> Result<String> {
    let (references, rows): (Vec<Row>, Vec<Row>) =
        parse(csv)?.into_iter().partition(|r| r.identities == 0);
    if rows.is_empty() {
        bail!("the CSV has reference lines (0 identities, 0 conduits) but no measured sizes");
    }
    // Cases in the order they first appear (the benchmark's order), one colour each.
    let mut cases: Vec<&str> = Vec::new();
    for r in &rows {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    let sizes: BTreeSet<u64> = rows.iter().map(|r| r.identities).collect();
    let conduits: BTreeSet<u64> = rows.iter().map(|r| r.conduits).collect();
    // (conduits, case index) -> identities -> row
    let mut series: BTreeMap<(u64, usize), BTreeMap<u64, &Row>> = BTreeMap::new();
    for r in &rows {
        let c = cases.iter().position(|&c| c == r.case).unwrap_or_default();
        series
            .entry((r.conduits, c))
            .or_default()
            .insert(r.identities, r);
    }

    // y: linear from 0, shared by every panel, always showing the goal line, with headroom.
    let top = 1.05
        * rows
            .iter()
            .chain(&references)
            .map(|r| r.ns / r.floor_ns)
            .fold(GOAL, f64::max);
    let step = nice_step(top / 5.0);
    let ticks = (top / step - 1e-9).ceil().max(1.0) as u32;
    let y_max = step * f64::from(ticks);
    let y = |v: f64| PLOT_TOP + PLOT_HEIGHT * (1.0 - v / y_max);
    let decimals = (-step.log10().floor()).max(0.0) as usize;

    // x: log10 of identities, the smallest and largest size present at the panel's edges.
    let lo = (*sizes.first().unwrap_or(&1) as f64).log10();
    let hi = (*sizes.last().unwrap_or(&1) as f64).log10();

    let panels = conduits.len() as f64;
    let panel_w = (WIDTH - MARGIN_LEFT - MARGIN_RIGHT - PANEL_GAP * (panels - 1.0)) / panels;

    // The empty program (1× by definition) and the references: dotted lines across every
    // panel, named in the legend after the cases (inline labels collided with the goal's).
    let lines: Vec<(String, f64, Option<String>)> =
        std::iter::once(("empty XDP program: 1×".to_owned(), 1.0, None))
            .chain(references.iter().map(|r| {
                let v = r.ns / r.floor_ns;
                let tip = format!(
                    "{}: {:.1} ns = {v:.2}× the empty program ({:.1} ns)",
                    r.case, r.ns, r.floor_ns
                );
                (
                    format!("{}: {v:.1}× the empty program", r.case),
                    v,
                    Some(tip),
                )
            }))
            .collect();
    // Legend: as many columns (up to 3) as the longest entry allows, filled column by column.
    let entries = cases.len() + lines.len();
    let longest = cases
        .iter()
        .copied()
        .chain(lines.iter().map(|(l, _, _)| l.as_str()))
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let entry_w = 32.0 + longest * CHAR_WIDTH + 16.0;
    let legend_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let cols = ((legend_w / entry_w).floor() as usize).clamp(1, 3);
    let legend_rows = entries.div_ceil(cols);
    let legend_top = PLOT_TOP + PLOT_HEIGHT + LEGEND_GAP;
    let height = (legend_top + LEGEND_ROW * legend_rows as f64 + 4.0).ceil();

    let mut s = String::new();
    writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Verdana, Arial, sans-serif" font-size="12">"#,
        w = WIDTH,
        h = height
    )?;
    writeln!(s, "<title>{}</title>", esc(TITLE))?;
    writeln!(
        s,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    )?;
    writeln!(
        s,
        r#"<text x="{}" y="30" font-size="18" font-weight="bold" text-anchor="middle">{}</text>"#,
        n(WIDTH / 2.0),
        esc(TITLE)
    )?;
    let mid = PLOT_TOP + PLOT_HEIGHT / 2.0;
    writeln!(
        s,
        r#"<text x="14" y="{m}" text-anchor="middle" transform="rotate(-90 14 {m})">ns per packet ÷ empty XDP program, same run</text>"#,
        m = n(mid)
    )?;

    for (p, &cds) in conduits.iter().enumerate() {
        let px = MARGIN_LEFT + p as f64 * (panel_w + PANEL_GAP);
        let left = px + PLOT_INSET_LEFT;
        let right = px + panel_w - PLOT_INSET_RIGHT;
        let bottom = PLOT_TOP + PLOT_HEIGHT;
        let x = |ids: u64| {
            if hi > lo {
                left + X_PAD
                    + (right - left - 2.0 * X_PAD) * ((ids as f64).log10() - lo) / (hi - lo)
            } else {
                (left + right) / 2.0
            }
        };
        writeln!(s, r#"<g class="panel" data-conduits="{cds}">"#)?;
        writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="14" font-weight="bold" text-anchor="middle">{} conduit{}</text>"#,
            n((left + right) / 2.0),
            n(PANEL_TITLE_Y),
            size_label(cds),
            if cds == 1 { "" } else { "s" }
        )?;
        // Grid and y ticks.
        for t in 0..=ticks {
            let v = step * f64::from(t);
            writeln!(
                s,
                r##"<line x1="{l}" y1="{y}" x2="{r}" y2="{y}" stroke="{c}" stroke-width="1"/>"##,
                l = n(left),
                r = n(right),
                y = n(y(v)),
                c = if t == 0 { "#333333" } else { "#dddddd" }
            )?;
            writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="end" fill="#333333">{v:.decimals$}×</text>"##,
                n(left - 5.0),
                n(y(v) + 4.0)
            )?;
        }
        // x ticks: only the sizes present.
        for &ids in &sizes {
            let xi = n(x(ids));
            writeln!(
                s,
                r##"<line x1="{xi}" y1="{t}" x2="{xi}" y2="{b}" stroke="#eeeeee" stroke-width="1"/>"##,
                t = n(PLOT_TOP),
                b = n(bottom)
            )?;
            writeln!(
                s,
                r##"<line x1="{xi}" y1="{b}" x2="{xi}" y2="{b5}" stroke="#333333" stroke-width="1"/>"##,
                b = n(bottom),
                b5 = n(bottom + 5.0)
            )?;
            writeln!(
                s,
                r##"<text x="{xi}" y="{}" text-anchor="middle" fill="#333333">{}</text>"##,
                n(bottom + 19.0),
                size_label(ids)
            )?;
        }
        writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#333333">identities (log scale)</text>"##,
            n((left + right) / 2.0),
            n(bottom + 37.0)
        )?;
        writeln!(
            s,
            r##"<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#333333" stroke-width="1"/>"##,
            l = n(left),
            t = n(PLOT_TOP),
            b = n(bottom)
        )?;
        // The goal.
        let goal = Rule {
            stroke: "#555555",
            width: "1.5",
            dash: "6 4",
        };
        goal.draw(&mut s, (left, right), y(GOAL), Some(GOAL_LABEL))?;
        // The empty program and the references.
        for (_, v, tip) in &lines {
            writeln!(s, r#"<g class="reference">"#)?;
            if let Some(tip) = tip {
                writeln!(s, "<title>{}</title>", esc(tip))?;
            }
            REFERENCE.draw(&mut s, (left, right), y(*v), None)?;
            writeln!(s, "</g>")?;
        }
        // One line per case.
        for (c, case) in cases.iter().enumerate() {
            let Some(points) = series.get(&(cds, c)) else {
                continue;
            };
            let colour = PALETTE[c % PALETTE.len()];
            writeln!(s, r#"<g class="series">"#)?;
            writeln!(
                s,
                "<title>{} ({} conduits)</title>",
                esc(case),
                size_label(cds)
            )?;
            let coords: Vec<String> = points
                .values()
                .map(|r| format!("{},{}", n(x(r.identities)), n(y(r.ns / r.floor_ns))))
                .collect();
            writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round"/>"#,
                coords.join(" ")
            )?;
            for r in points.values() {
                let tip = format!(
                    "{}: {} identities, {} conduits: {:.1} ns = {:.2}× floor ({:.1} ns)",
                    r.case,
                    size_label(r.identities),
                    size_label(r.conduits),
                    r.ns,
                    r.ns / r.floor_ns,
                    r.floor_ns
                );
                marker(
                    &mut s,
                    c,
                    x(r.identities),
                    y(r.ns / r.floor_ns),
                    colour,
                    &tip,
                )?;
            }
            writeln!(s, "</g>")?;
        }
        writeln!(s, "</g>")?;
    }

    // Legend.
    let col_w = legend_w / cols as f64;
    writeln!(s, r#"<g class="legend">"#)?;
    for (c, case) in cases.iter().enumerate() {
        let lx = MARGIN_LEFT + (c / legend_rows) as f64 * col_w;
        let ly = legend_top + (c % legend_rows) as f64 * LEGEND_ROW;
        let colour = PALETTE[c % PALETTE.len()];
        writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/>"#,
            n(lx),
            n(lx + 24.0)
        )?;
        marker(&mut s, c, lx + 12.0, ly, colour, case)?;
        writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="{LEGEND_FONT}">{}</text>"#,
            n(lx + 32.0),
            n(ly + 4.0),
            esc(case)
        )?;
    }
    for (i, (label, _, _)) in lines.iter().enumerate() {
        let e = cases.len() + i;
        let lx = MARGIN_LEFT + (e / legend_rows) as f64 * col_w;
        let ly = legend_top + (e % legend_rows) as f64 * LEGEND_ROW;
        REFERENCE.draw(&mut s, (lx, lx + 24.0), ly, None)?;
        writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="{LEGEND_FONT}">{}</text>"#,
            n(lx + 32.0),
            n(ly + 4.0),
            esc(label)
        )?;
    }
    writeln!(s, "</g>")?;
    writeln!(s, "</svg>")?;
    Ok(s)
}

/// Reads the benchmark CSV at `csv_path` and writes the plot to `svg_path`.
/// A dashed horizontal line across a panel, with its label above its right end if it has
/// one: the goal, and the reference lines (named in the legend).
struct Rule {
    stroke: &'static str,
    width: &'static str,
    dash: &'static str,
}

const REFERENCE: Rule = Rule {
    stroke: "#333333",
    width: "1",
    dash: "2 3",
};

impl Rule {
    fn draw(
        &self,
        s: &mut String,
        (left, right): (f64, f64),
        y: f64,
        label: Option<&str>,
    ) -> Result<()> {
        let Rule {
            stroke,
            width,
            dash,
        } = self;
        writeln!(
            s,
            r#"<line x1="{l}" y1="{yy}" x2="{r}" y2="{yy}" stroke="{stroke}" stroke-width="{width}" stroke-dasharray="{dash}"/>"#,
            l = n(left),
            r = n(right),
            yy = n(y)
        )?;
        if let Some(label) = label {
            writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="end" font-size="11" fill="#333333" stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke">{}</text>"##,
                n(right - 4.0),
                n(y - 5.0),
                esc(label)
            )?;
        }
        Ok(())
    }
}

pub fn write(csv_path: &Path, svg_path: &Path) -> Result<()> {
    let csv = std::fs::read_to_string(csv_path)
        .with_context(|| format!("reading {}", csv_path.display()))?;
    let doc = svg(&csv).with_context(|| format!("plotting {}", csv_path.display()))?;
    std::fs::write(svg_path, doc).with_context(|| format!("writing {}", svg_path.display()))
}

/// A point marker; the shape cycles with the case (circle, square, triangle, diamond, inverted
/// triangle) so that lines stay distinguishable without colour.
fn marker(s: &mut String, case: usize, x: f64, y: f64, colour: &str, tip: &str) -> Result<()> {
    let tip = esc(tip);
    match case % 5 {
        0 => writeln!(
            s,
            r#"<circle cx="{}" cy="{}" r="4" fill="{colour}"><title>{tip}</title></circle>"#,
            n(x),
            n(y)
        )?,
        1 => writeln!(
            s,
            r#"<rect x="{}" y="{}" width="7" height="7" fill="{colour}"><title>{tip}</title></rect>"#,
            n(x - 3.5),
            n(y - 3.5)
        )?,
        k => {
            let d = match k {
                2 => format!("M{} {}l4.5 8h-9z", n(x), n(y - 5.0)),
                3 => format!("M{} {}l5 5l-5 5l-5 -5z", n(x), n(y - 5.0)),
                _ => format!("M{} {}l4.5 -8h-9z", n(x), n(y + 5.0)),
            };
            writeln!(
                s,
                r#"<path d="{d}" fill="{colour}"><title>{tip}</title></path>"#
            )?
        }
    }
    Ok(())
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    mag * if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// 10, 10k, 1M.
fn size_label(v: u64) -> String {
    if v >= 1_000_000 && v.is_multiple_of(1_000_000) {
        format!("{}M", v / 1_000_000)
    } else if v >= 1_000 && v.is_multiple_of(1_000) {
        format!("{}k", v / 1_000)
    } else {
        v.to_string()
    }
}

/// A coordinate, rounded to 0.1 px.
fn n(v: f64) -> String {
    let v = (v * 10.0).round() / 10.0;
    if v == v.trunc() {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

/// Escapes text for XML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "identities,conduits,case,ns,floor_ns
10,10,established flow (TCP ACK),95.0,28.0
10,10,new flow denied (SYN to a closed port),410.0,28.0
10000,10,established flow (TCP ACK),97.0,27.0
1000000,10000,established flow (TCP ACK),101.0,29.0
10,1000,established flow (TCP ACK),96.0,34.0
";

    /// The full grid: 3 identity sizes × 3 conduit sizes × 12 cases, a few rows missing.
    fn full() -> (String, usize) {
        let cases = [
            "established flow (TCP ACK)",
            "new flow allowed (SYN+RST: full decision, no insert)",
            "new flow denied (SYN to a closed port)",
            "ARP request",
            "IPv6 new flow denied",
            "established flow, TCP data with a Modbus read (rule without filter)",
            "established flow, Modbus read inspected (read-only rule)",
            "established flow, Modbus write dropped (read-only rule)",
            "VLAN-tagged (2 tags) established flow",
            "established flow (TCP ACK), many distinct flows",
            "new flow denied, many distinct flows",
            "a <weird> & \"quoted\" 'case'",
        ];
        let mut csv = String::from("identities,conduits,case,ns,floor_ns\n");
        let mut pairs = BTreeSet::new();
        for (ci, cds) in [10u64, 1000, 10000].into_iter().enumerate() {
            for (ii, ids) in [10u64, 10_000, 1_000_000].into_iter().enumerate() {
                for (k, case) in cases.iter().enumerate() {
                    // The last case is only measured with 10 conduits; 1M identities with 10k
                    // conduits lacks the Modbus cases.
                    if (k == 11 && cds != 10) || (ci == 2 && ii == 2 && (5..8).contains(&k)) {
                        continue;
                    }
                    let ns = 100.0 + 37.0 * k as f64 + 11.0 * ii as f64 + 5.0 * ci as f64;
                    writeln!(csv, "{ids},{cds},{case},{ns:.1},28.0").unwrap();
                    pairs.insert((cds, k));
                }
            }
        }
        (csv, pairs.len())
    }

    fn err(csv: &str) -> String {
        format!("{:#}", svg(csv).expect_err("an error"))
    }

    #[test]
    fn parse_errors_name_the_line() {
        let h = "identities,conduits,case,ns,floor_ns\n";
        let e = err(&format!("{h}10,10,ok,1,2\n10,10,too few,3\n"));
        assert!(e.contains("line 3") && e.contains("found 4"), "{e}");
        let e = err(&format!("{h}10,10,a,1,2\n\n10,ten,b,1,2\n"));
        assert!(e.contains("line 4") && e.contains("conduits `ten`"), "{e}");
        let e = err(&format!("{h}10,10,a,fast,2\n"));
        assert!(e.contains("line 2") && e.contains("ns `fast`"), "{e}");
        let e = err(&format!("{h}10,10,a,1,NaN\n"));
        assert!(e.contains("line 2") && e.contains("floor_ns `NaN`"), "{e}");
        let e = err(&format!("{h}10,10,a,1,0\n"));
        assert!(e.contains("line 2") && e.contains("above 0"), "{e}");
        let e = err(&format!("{h}0,10,a,1,2\n"));
        assert!(e.contains("line 2") && e.contains("at least 1"), "{e}");
        let e = err(&format!("{h}10,10,a,1,2\n10,10,a,1,3\n"));
        assert!(e.contains("line 3") && e.contains("line 2"), "{e}");
        let e = err("identities,conduits,ns,floor_ns\n10,10,1,2\n");
        assert!(e.contains("line 1") && e.contains("header"), "{e}");
        let e = err(&format!("{h}10,10,a,b,1,x\n"));
        assert!(
            e.contains("line 2") && e.contains("more than 5 columns"),
            "{e}"
        );
        assert!(err("").contains("empty"));
        assert!(err(h).contains("no data rows"));
    }

    #[test]
    fn case_names_may_contain_commas_and_quotes() {
        let csv = "identities,conduits,case,ns,floor_ns\r\n\
            10,10,established flow, Modbus read inspected (read-only rule),556.0,34.0\r\n\
            10,10,\"quoted, \"\"name\"\"\",100.0,25.0\r\n";
        let rows = parse(csv).unwrap();
        assert_eq!(
            rows[0].case,
            "established flow, Modbus read inspected (read-only rule)"
        );
        assert_eq!(rows[0].ns, 556.0);
        assert_eq!(rows[1].case, "quoted, \"name\"");
        let doc = svg(csv).unwrap();
        assert!(doc.contains(">quoted, &quot;name&quot;</text>"), "{doc}");
    }

    /// A minimal well-formedness check: tags balance, attributes are quoted, `&` starts one of
    /// the five predefined entities, no stray `<` or `>` in text.
    fn balanced(doc: &str) -> Result<(), String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = doc;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            if text.contains('>') {
                return Err(format!("stray `>` in {text:?}"));
            }
            check_entities(text)?;
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            let tail = &rest[open..];
            let close = if tail.starts_with("<?") {
                tail.find("?>").map(|i| i + 2)
            } else if tail.starts_with("<!--") {
                tail.find("-->").map(|i| i + 3)
            } else {
                tail.find('>').map(|i| i + 1)
            }
            .ok_or_else(|| format!("unterminated tag at {:?}", &tail[..tail.len().min(40)]))?;
            let tag = &tail[..close];
            rest = &tail[close..];
            if tag.starts_with("<?") || tag.starts_with("<!--") {
                continue;
            }
            if tag[1..].contains('<') {
                return Err(format!("`<` inside tag {tag:?}"));
            }
            check_entities(tag)?;
            if !tag.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in {tag:?}"));
            }
            if let Some(name) = tag.strip_prefix("</") {
                let name = name.trim_end_matches('>').trim();
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
            } else {
                let name = tag[1..]
                    .split(|c: char| c.is_whitespace() || c == '>' || c == '/')
                    .next()
                    .unwrap_or_default();
                if name.is_empty() {
                    return Err(format!("tag without a name: {tag:?}"));
                }
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with("/>") {
                    stack.push(name);
                }
            }
        }
        if !rest.trim().is_empty() {
            return Err(format!("text after the root: {rest:?}"));
        }
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    fn check_entities(s: &str) -> Result<(), String> {
        for (i, _) in s.match_indices('&') {
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| s[i..].starts_with(e))
            {
                return Err(format!("bare `&` in {s:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn the_balance_check_catches_mistakes() {
        assert!(balanced("<a><b/></a>").is_ok());
        assert!(balanced("<a><b></a>").is_err());
        assert!(balanced("<a>x & y</a>").is_err());
        assert!(balanced("<a>x < y</a>").is_err());
        assert!(balanced(r#"<a x="1/>"#).is_err());
        assert!(balanced("<a/><b/>").is_err());
    }

    #[test]
    fn output_is_well_formed() {
        balanced(&svg(SAMPLE).unwrap()).unwrap();
        let doc = svg(&full().0).unwrap();
        balanced(&doc).unwrap();
        assert!(doc.contains(">a &lt;weird&gt; &amp; &quot;quoted&quot; &apos;case&apos;</text>"));
    }

    #[test]
    fn xmllint_accepts_the_output() {
        use std::{io::Write as _, process::Stdio};
        for csv in [SAMPLE.to_owned(), full().0] {
            let doc = svg(&csv).unwrap();
            let mut child = std::process::Command::new("xmllint")
                .args(["--noout", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("xmllint is missing: apt-get install libxml2-utils");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(doc.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "xmllint: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn one_polyline_per_case_and_conduit_size() {
        let doc = svg(SAMPLE).unwrap();
        // (established, 10), (denied, 10), (established, 1000), (established, 10000)
        assert_eq!(doc.matches("<polyline").count(), 4);
        assert_eq!(doc.matches(r#"<g class="panel""#).count(), 3);
        let (csv, pairs) = full();
        let doc = svg(&csv).unwrap();
        assert_eq!(doc.matches("<polyline").count(), pairs);
        assert_eq!(pairs, 3 * 11 + 1);
        // Every case in the legend, once.
        let legend = doc.split(r#"<g class="legend">"#).nth(1).unwrap();
        // ... and the empty program's line after them.
        assert_eq!(legend.matches("<line").count(), 12 + 1);
        assert_eq!(legend.matches("<text").count(), 12 + 1);
    }

    #[test]
    fn axes_show_the_sizes_present_and_the_goal() {
        let doc = svg(SAMPLE).unwrap();
        for label in [">10</text>", ">10k</text>", ">1M</text>"] {
            assert!(doc.contains(label), "{label}");
        }
        for title in [
            ">10 conduits</text>",
            ">1k conduits</text>",
            ">10k conduits</text>",
        ] {
            assert!(doc.contains(title), "{title}");
        }
        assert!(doc.contains(">goal: established ≤ 4× floor</text>"));
        assert!(doc.contains(&esc(TITLE)));
        // Ratios up to 14.6×, plus headroom: 0, 5, 10, 15, 20 (× floor).
        for t in [">0×<", ">5×<", ">10×<", ">15×<", ">20×<"] {
            assert!(doc.contains(t), "{t}");
        }
        assert!(!doc.contains(">25×<"));
    }

    #[test]
    fn a_single_size_still_renders() {
        let csv = "identities,conduits,case,ns,floor_ns\n10,10,established flow (TCP ACK),95.0,28.0\n10,10,ARP request,60.0,28.0\n";
        let doc = svg(csv).unwrap();
        balanced(&doc).unwrap();
        assert_eq!(doc.matches("<polyline").count(), 2);
        assert!(doc.contains(">10</text>"));
        assert!(!doc.contains("NaN") && !doc.contains("inf"), "{doc}");
        // Below the goal: the y axis still reaches above 4×.
        assert!(doc.contains(">4×<") && doc.contains(">5×<") && !doc.contains(">6×<"));
    }

    #[test]
    fn references_are_lines_across_every_panel() {
        let csv = format!("{SAMPLE}0,0,xdp-filter: established flow (TCP ACK),56.0,28.0\n");
        let doc = svg(&csv).unwrap();
        balanced(&doc).unwrap();
        // Three panels, each with the empty program's line and xdp-filter's.
        assert_eq!(doc.matches(r#"<g class="reference">"#).count(), 6);
        // Not a series; named once each in the legend, after the cases.
        assert_eq!(doc.matches("<polyline").count(), 4);
        let legend = doc.split(r#"<g class="legend">"#).nth(1).unwrap();
        assert_eq!(legend.matches("<text").count(), 2 + 2);
        assert!(legend.contains(">empty XDP program: 1×</text>"));
        assert!(
            legend
                .contains(">xdp-filter: established flow (TCP ACK): 2.0× the empty program</text>")
        );
        assert!(doc.contains("56.0 ns = 2.00× the empty program (28.0 ns)"));
        // A reference needs both sizes 0; references alone are no plot.
        assert!(err("identities,conduits,case,ns,floor_ns\n0,10,x,1,2\n").contains("line 2"));
        assert!(
            err("identities,conduits,case,ns,floor_ns\n0,0,x,1,2\n").contains("no measured sizes")
        );
    }

    #[test]
    fn deterministic() {
        let (csv, _) = full();
        assert_eq!(svg(&csv).unwrap(), svg(&csv).unwrap());
    }

    #[test]
    fn helpers() {
        assert_eq!(size_label(10), "10");
        assert_eq!(size_label(10_000), "10k");
        assert_eq!(size_label(1_000_000), "1M");
        assert_eq!(size_label(1_500), "1500");
        assert_eq!(nice_step(0.84), 1.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(n(12.0), "12");
        assert_eq!(n(12.345), "12.3");
        assert_eq!(esc(r#"<a & "b">'"#), "&lt;a &amp; &quot;b&quot;&gt;&apos;");
    }

    #[test]
    fn write_reads_and_writes_files() {
        let dir = std::env::temp_dir().join(format!("conduit-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (csv, svg_path) = (dir.join("in.csv"), dir.join("out.svg"));
        std::fs::write(&csv, SAMPLE).unwrap();
        write(&csv, &svg_path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&svg_path).unwrap(),
            svg(SAMPLE).unwrap()
        );
        std::fs::write(&csv, "identities,conduits,case,ns,floor_ns\n10,10,x\n").unwrap();
        let e = format!("{:#}", write(&csv, &svg_path).unwrap_err());
        assert!(e.contains("in.csv") && e.contains("line 2"), "{e}");
        let missing = dir.join("missing.csv");
        let e = format!("{:#}", write(&missing, &svg_path).unwrap_err());
        assert!(e.contains("missing.csv"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
