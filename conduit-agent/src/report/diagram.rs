//! The zone-and-conduit diagram: the report's zones and conduits as a layered layout (rows by
//! Purdue level), and its SVG.
use std::fmt::Write as _;

use super::{
    layout::{self, CHAR_W, EdgeIn, Input, LABEL_H, Output, TITLE_CHAR_W},
    model::{ConduitEntry, Report, ZoneEntry},
};

/// Asset lines shown in a zone box; the rest are counted, listed in the box's tooltip and
/// in the zone register.
pub const MAX_ASSET_LINES: usize = 8;
/// Zones in one row at most; a Purdue level with more takes several rows.
pub const MAX_PER_ROW: usize = 6;
/// Characters of a conduit label at most (its full rules are in the conduit register).
pub const MAX_LABEL_CHARS: usize = 64;

/// Fill colours by SL-T 1..4 (and the `unknown` zone).
pub const SL_FILL: [&str; 4] = ["#e3f2e1", "#fff3c4", "#ffd9b0", "#f6b8b8"];
const UNKNOWN_FILL: &str = "#eeeeee";

/// A box of the diagram: a zone of the policy, or `unknown`.
pub struct ZoneBox<'a> {
    pub name: &'a str,
    pub zone: Option<&'a ZoneEntry>,
    pub lines: Vec<String>,
}

/// The diagram laid out: the boxes (zones, then `unknown` last), the labels of the edges, and
/// for each edge the conduit it draws.
pub struct Diagram<'a> {
    pub boxes: Vec<ZoneBox<'a>>,
    pub edge_conduit: Vec<&'a ConduitEntry>,
    pub labels: Vec<String>,
    /// The title of each row.
    pub titles: Vec<String>,
    pub out: Output,
}

pub fn conduit_label(c: &ConduitEntry) -> String {
    let mut s = format!("{}: {}", c.name, c.rules.join("; "));
    if c.bidirectional {
        s.push_str(" (both ways)");
    }
    if s.chars().count() > MAX_LABEL_CHARS {
        s = s.chars().take(MAX_LABEL_CHARS - 1).collect();
        s.push('…');
    }
    s
}

fn zone_lines(z: &ZoneEntry) -> Vec<String> {
    let mut sub = format!("SL-T {}", z.security_level);
    if let Some(p) = z.purdue_level {
        write!(sub, " · Purdue {p}").ok();
    }
    if z.mode == "monitor" {
        sub.push_str(" · MONITOR");
    }
    let mut lines = vec![sub];
    for a in z.assets.iter().take(MAX_ASSET_LINES) {
        lines.push(format!("{} {}", a.name, a.address));
    }
    if z.assets.len() > MAX_ASSET_LINES {
        lines.push(format!(
            "+ {} more assets",
            z.assets.len() - MAX_ASSET_LINES
        ));
    }
    if z.assets.is_empty() {
        lines.push("(no assets)".into());
    }
    lines
}

const BOX_PAD: f64 = 8.0;
const TITLE_H: f64 = 18.0;
const LINE_H: f64 = 14.0;

fn box_size(title: &str, lines: &[String]) -> (f64, f64) {
    let w = lines
        .iter()
        .map(|l| l.chars().count() as f64 * CHAR_W)
        .fold(title.chars().count() as f64 * TITLE_CHAR_W, f64::max)
        + 2.0 * BOX_PAD;
    let h = BOX_PAD + TITLE_H + LINE_H * lines.len() as f64 + BOX_PAD;
    (w.max(150.0).ceil(), h.ceil())
}

pub fn lay_out(r: &Report) -> Diagram<'_> {
    let mut boxes: Vec<ZoneBox<'_>> = r
        .zones
        .iter()
        .map(|z| ZoneBox {
            name: &z.name,
            zone: Some(z),
            lines: zone_lines(z),
        })
        .collect();
    boxes.push(ZoneBox {
        name: "unknown",
        zone: None,
        lines: vec!["addresses of no zone".into()],
    });
    let unknown = boxes.len() - 1;
    let index = |name: &str| {
        r.zones
            .iter()
            .position(|z| z.name == name)
            .unwrap_or(unknown)
    };
    // Rows: `unknown` on top (the world outside the zones), then Purdue levels from the
    // highest down, then the zones without a level.
    let mut levels: Vec<u8> = r.zones.iter().filter_map(|z| z.purdue_level).collect();
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    let mut rows = vec![vec![unknown]];
    let mut titles = vec!["outside".to_owned()];
    let mut push_rows = |members: Vec<usize>, title: String| {
        for (i, chunk) in members.chunks(MAX_PER_ROW).enumerate() {
            rows.push(chunk.to_vec());
            titles.push(if i == 0 {
                title.clone()
            } else {
                format!("{title} ({})", i + 1)
            });
        }
    };
    for l in &levels {
        let members = (0..r.zones.len())
            .filter(|&i| r.zones[i].purdue_level == Some(*l))
            .collect();
        push_rows(members, format!("Purdue {l}"));
    }
    let none: Vec<usize> = (0..r.zones.len())
        .filter(|&i| r.zones[i].purdue_level.is_none())
        .collect();
    if !none.is_empty() {
        push_rows(none, "no level".into());
    }
    let mut edges = Vec::new();
    let mut edge_conduit = Vec::new();
    let mut labels = Vec::new();
    for c in &r.conduits {
        let label = conduit_label(c);
        for f in &c.from {
            for t in &c.to {
                edges.push(EdgeIn {
                    from: index(f),
                    to: index(t),
                    label_w: (label.chars().count() as f64 * CHAR_W).ceil() + 4.0,
                });
                edge_conduit.push(c);
                labels.push(label.clone());
            }
        }
    }
    let input = Input {
        sizes: boxes.iter().map(|b| box_size(b.name, &b.lines)).collect(),
        rows,
        row_titles: titles,
        edges,
    };
    let out = layout::layout(&input);
    Diagram {
        boxes,
        edge_conduit,
        labels,
        titles: input.row_titles,
        out,
    }
}

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const LEGEND_H: f64 = 64.0;

/// The diagram as a standalone SVG document.
pub fn svg(r: &Report) -> String {
    let d = lay_out(r);
    let mut s = String::new();
    write_svg(r, &d, &mut s);
    s
}

/// Writes the `<svg>` element (also used inline in the HTML).
pub fn write_svg(r: &Report, d: &Diagram<'_>, s: &mut String) {
    let o = &d.out;
    let (w, h) = (o.width.max(560.0), o.height + LEGEND_H);
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" font-family="DejaVu Sans Mono, Liberation Mono, monospace" font-size="11" role="img" aria-labelledby="diagram-title">
<title id="diagram-title">Zones and conduits of site {site}</title>
<defs>
<marker id="arrowhead" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker>
</defs>
<rect x="0" y="0" width="{w:.0}" height="{h:.0}" fill="#ffffff"/>"##,
        site = esc(&r.policy.site)
    );
    for (i, b) in o.bands.iter().enumerate() {
        if i % 2 == 1 {
            let _ = writeln!(
                s,
                r##"<rect class="band" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#f5f6f8"/>"##,
                b.x, b.y, w, b.h
            );
        }
    }
    for (t, rect) in d.titles.iter().zip(&o.row_titles) {
        let _ = writeln!(
            s,
            r##"<text class="row-title" x="{:.1}" y="{:.1}" font-weight="bold" fill="#555">{}</text>"##,
            rect.x,
            rect.y + 12.0,
            esc(t)
        );
    }
    // Conduits first, boxes over them.
    for (i, e) in o.edges.iter().enumerate() {
        let c = d.edge_conduit[i];
        let pts: Vec<String> = e
            .points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let start = if c.bidirectional {
            r#" marker-start="url(#arrowhead)""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r##"<g class="conduit" data-conduit="{name}"><title>{name}: from {from} to {to}{both}; {rules}</title>
<polyline points="{pts}" fill="none" stroke="#333" stroke-width="1.3"{start} marker-end="url(#arrowhead)"/>
<rect class="label" x="{lx:.1}" y="{ly:.1}" width="{lw:.1}" height="{lh:.1}" fill="#ffffff" fill-opacity="0.9" stroke="#bbb" stroke-width="0.5"/>
<text x="{tx:.1}" y="{ty:.1}">{label}</text></g>"##,
            name = esc(&c.name),
            from = esc(&c.from.join(", ")),
            to = esc(&c.to.join(", ")),
            both = if c.bidirectional { " (both ways)" } else { "" },
            rules = esc(&c.rules.join("; ")),
            pts = pts.join(" "),
            lx = e.label.x,
            ly = e.label.y,
            lw = e.label.w,
            lh = e.label.h,
            tx = e.label.x + 2.0,
            ty = e.label.y + LABEL_H - 3.5,
            label = esc(&d.labels[i]),
        );
    }
    for (i, b) in d.boxes.iter().enumerate() {
        let rect = &o.boxes[i];
        let (fill, stroke, dash) = match b.zone {
            None => (UNKNOWN_FILL, "#777", r#" stroke-dasharray="6 3""#),
            Some(z) => (
                SL_FILL[usize::from(z.security_level.clamp(1, 4)) - 1],
                "#333",
                if z.mode == "monitor" {
                    r#" stroke-dasharray="8 4""#
                } else {
                    ""
                },
            ),
        };
        let all: Vec<String> = b
            .zone
            .map(|z| {
                z.assets
                    .iter()
                    .map(|a| format!("{} {}", a.name, a.address))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            r##"<g class="zone" data-zone="{name}"><title>zone {name}{assets}</title>
<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="4" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"{dash}/>
<text x="{tx:.1}" y="{ty:.1}" font-size="13" font-weight="bold">{name}</text>"##,
            name = esc(b.name),
            assets = if all.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&all.join(", ")))
            },
            x = rect.x,
            y = rect.y,
            w = rect.w,
            h = rect.h,
            sw = if b.zone.is_some_and(|z| z.mode == "monitor") {
                2.0
            } else {
                1.2
            },
            tx = rect.x + BOX_PAD,
            ty = rect.y + BOX_PAD + 12.0,
        );
        for (k, line) in b.lines.iter().enumerate() {
            let asset = b
                .zone
                .and_then(|z| (k >= 1).then(|| z.assets.get(k - 1)).flatten())
                .filter(|_| k <= MAX_ASSET_LINES);
            let attr = asset.map_or_else(String::new, |a| {
                format!(r#" class="asset" data-asset="{}""#, esc(&a.name))
            });
            let _ = writeln!(
                s,
                r##"<text{attr} x="{:.1}" y="{:.1}"{}>{}</text>"##,
                rect.x + BOX_PAD,
                rect.y + BOX_PAD + TITLE_H + LINE_H * k as f64 + 10.0,
                if k == 0 { r##" fill="#444""## } else { "" },
                esc(line)
            );
        }
        s.push_str("</g>\n");
    }
    // Legend.
    let ly = o.height + 8.0;
    let _ = writeln!(
        s,
        r##"<g class="legend"><text x="16" y="{:.1}" font-weight="bold">SL-T</text>"##,
        ly + 14.0
    );
    for (i, fill) in SL_FILL.iter().enumerate() {
        let x = 60.0 + i as f64 * 70.0;
        let _ = writeln!(
            s,
            r##"<rect x="{x:.1}" y="{:.1}" width="16" height="14" fill="{fill}" stroke="#333"/><text x="{:.1}" y="{:.1}">SL {}</text>"##,
            ly + 3.0,
            x + 20.0,
            ly + 14.0,
            i + 1
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="16" y="{:.1}" width="26" height="14" fill="#fff" stroke="#333" stroke-width="2" stroke-dasharray="8 4"/><text x="48" y="{:.1}">monitor mode (counted, not dropped)</text>
<rect x="330" y="{:.1}" width="26" height="14" fill="{UNKNOWN_FILL}" stroke="#777" stroke-dasharray="6 3"/><text x="362" y="{:.1}">unknown: addresses of no zone</text>
<text x="16" y="{:.1}">arrow: from → to (initiator → responder); arrowheads at both ends: bidirectional</text></g>
</svg>"##,
        ly + 25.0,
        ly + 36.0,
        ly + 25.0,
        ly + 36.0,
        ly + 54.0
    );
}
