//! A layered (Sugiyama) layout of the zone-and-conduit diagram.
//!
//! Why our own: the layered-layout crates on crates.io (rust-sugiyama, dagre ports) choose the
//! layers themselves from the edges (rank assignment); here the layers are given, one row per
//! Purdue level, because that is what an auditor reads the drawing by. What is left of
//! Sugiyama's method is small and written here, with tests:
//! 1. long edges are split by a dummy node in every row they cross, so that no edge passes
//!    through a box;
//! 2. the order within each row is chosen by barycenter sweeps (down and up, several times),
//!    keeping the order with the fewest crossings;
//! 3. x coordinates: each node as near the mean of its neighbours as the order and the gaps
//!    allow;
//! 4. edges are routed orthogonally through the channel between two rows, each horizontal
//!    segment on its own track of the channel (the left-edge algorithm of channel routing: a
//!    track holds segments whose extents, label included, do not meet), so that no two labels
//!    and no label and box ever overlap.
//!
//! All sizes are in SVG user units (px). Text sizes are estimated from a monospace font whose
//! advance is 0.6 em, which the SVG asks for.

/// Width of one character of the 11 px labels (0.6 em of a monospace font, rounded up).
pub const CHAR_W: f64 = 6.7;
/// Width of one character of the 13 px zone titles.
pub const TITLE_CHAR_W: f64 = 7.9;
/// Height of a label box.
pub const LABEL_H: f64 = 14.0;
/// Distance between two tracks of a channel.
const TRACK_H: f64 = LABEL_H + 4.0;
/// Gap between two boxes of a row.
const GAP: f64 = 28.0;
/// Gap next to a dummy node.
const DUMMY_GAP: f64 = 12.0;
/// Width reserved for a dummy node (the vertical line of a long edge crossing a row).
const DUMMY_W: f64 = 10.0;
/// Margin around the drawing; the row titles sit in the left one.
const MARGIN: f64 = 16.0;
pub const ROW_TITLE_W: f64 = 120.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn right(&self) -> f64 {
        self.x + self.w
    }

    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }

    /// Whether the two rectangles share interior (touching edges do not count).
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.right() && o.x < self.right() && self.y < o.bottom() && o.y < self.bottom()
    }

    /// Whether the axis-parallel segment (a, b) passes through the interior (running along
    /// a side or ending on it does not count).
    pub fn crossed_by(&self, a: (f64, f64), b: (f64, f64)) -> bool {
        let (x0, x1) = (a.0.min(b.0), a.0.max(b.0));
        let (y0, y1) = (a.1.min(b.1), a.1.max(b.1));
        if x0 == x1 {
            self.x < x0 && x0 < self.right() && y0 < self.bottom() && self.y < y1
        } else if y0 == y1 {
            self.y < y0 && y0 < self.bottom() && x0 < self.right() && self.x < x1
        } else {
            self.overlaps(&Rect {
                x: x0,
                y: y0,
                w: x1 - x0,
                h: y1 - y0,
            })
        }
    }
}

/// What is to be laid out: boxes of known size in given rows, and edges between them.
#[derive(Clone, Debug, Default)]
pub struct Input {
    /// Width and height of every box.
    pub sizes: Vec<(f64, f64)>,
    /// The rows, top to bottom, with the boxes in each (an initial order).
    pub rows: Vec<Vec<usize>>,
    /// The title of each row, drawn left of it.
    pub row_titles: Vec<String>,
    pub edges: Vec<EdgeIn>,
}

#[derive(Clone, Debug)]
pub struct EdgeIn {
    pub from: usize,
    pub to: usize,
    /// The label's width (its height is [`LABEL_H`]).
    pub label_w: f64,
}

#[derive(Clone, Debug)]
pub struct Output {
    pub width: f64,
    pub height: f64,
    pub boxes: Vec<Rect>,
    pub row_titles: Vec<Rect>,
    /// The row bands (for a background), top to bottom.
    pub bands: Vec<Rect>,
    pub edges: Vec<EdgeOut>,
}

#[derive(Clone, Debug)]
pub struct EdgeOut {
    /// The polyline from the `from` box to the `to` box, axis-parallel segments.
    pub points: Vec<(f64, f64)>,
    pub label: Rect,
}

/// A node of the layered graph: a box, or a dummy on a long edge.
#[derive(Clone, Copy, Debug)]
struct Node {
    w: f64,
    h: f64,
    row: usize,
    dummy: bool,
}

/// One segment of an edge between two rows (`upper` in row r, `lower` in row r + 1), or
/// within one row (both in row r, through the channel below it).
#[derive(Clone, Copy, Debug)]
struct Seg {
    upper: usize,
    lower: usize,
    same_row: bool,
    edge: usize,
}

pub fn layout(input: &Input) -> Output {
    let nrows = input.rows.len();
    let mut nodes: Vec<Node> = input
        .sizes
        .iter()
        .map(|&(w, h)| Node {
            w,
            h,
            row: 0,
            dummy: false,
        })
        .collect();
    for (r, row) in input.rows.iter().enumerate() {
        for &n in row {
            nodes[n].row = r;
        }
    }
    let mut order: Vec<Vec<usize>> = input.rows.clone();
    // 1. Split long edges; every edge becomes a chain of segments, top to bottom.
    let mut chains: Vec<Vec<Seg>> = Vec::with_capacity(input.edges.len());
    for (i, e) in input.edges.iter().enumerate() {
        let (a, b) = (e.from, e.to);
        let (ra, rb) = (nodes[a].row, nodes[b].row);
        if ra == rb {
            chains.push(vec![Seg {
                upper: a,
                lower: b,
                same_row: true,
                edge: i,
            }]);
            continue;
        }
        let (top, bottom) = if ra < rb { (a, b) } else { (b, a) };
        let (rt, rbm) = (nodes[top].row, nodes[bottom].row);
        let mut chain = Vec::new();
        let mut prev = top;
        for (r, row) in order.iter_mut().enumerate().take(rbm).skip(rt + 1) {
            let d = nodes.len();
            nodes.push(Node {
                w: DUMMY_W,
                h: 0.0,
                row: r,
                dummy: true,
            });
            row.push(d);
            chain.push(Seg {
                upper: prev,
                lower: d,
                same_row: false,
                edge: i,
            });
            prev = d;
        }
        chain.push(Seg {
            upper: prev,
            lower: bottom,
            same_row: false,
            edge: i,
        });
        chains.push(chain);
    }
    let segs: Vec<Seg> = chains.iter().flatten().copied().collect();
    // 2. Order within rows.
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for s in segs.iter().filter(|s| !s.same_row) {
        down[s.upper].push(s.lower);
        up[s.lower].push(s.upper);
    }
    order_rows(&mut order, &up, &down, nodes.len());
    // 3. x coordinates.
    let x = place_x(&order, &nodes, &up, &down);
    // Rows: heights and y, channels between them sized by their tracks (computed below).
    let row_h: Vec<f64> = order
        .iter()
        .map(|row| {
            row.iter()
                .map(|&n| nodes[n].h)
                .fold(0.0f64, f64::max)
                .max(LABEL_H * 2.0)
        })
        .collect();
    // 4. Ports: where each segment leaves its upper node (bottom side) and enters its lower
    //    node (top side; bottom side for a same-row segment). Spread along the side, in the
    //    order of the other ends, so that segments of one box do not cross each other there.
    let centre = |n: usize| x[n] + nodes[n].w / 2.0;
    let mut bottom_ports: Vec<Vec<(f64, usize, bool)>> = vec![Vec::new(); nodes.len()];
    let mut top_ports: Vec<Vec<(f64, usize)>> = vec![Vec::new(); nodes.len()];
    for (i, s) in segs.iter().enumerate() {
        bottom_ports[s.upper].push((centre(s.lower), i, true));
        if s.same_row {
            bottom_ports[s.lower].push((centre(s.upper), i, false));
        } else {
            top_ports[s.lower].push((centre(s.upper), i));
        }
    }
    let mut upper_x = vec![0.0; segs.len()];
    let mut lower_x = vec![0.0; segs.len()];
    for n in 0..nodes.len() {
        let (left, w) = (x[n], nodes[n].w);
        let mut b = std::mem::take(&mut bottom_ports[n]);
        b.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
        let k = b.len() as f64;
        for (j, (_, s, is_upper)) in b.iter().enumerate() {
            let px = if nodes[n].dummy {
                left + w / 2.0
            } else {
                left + w * (j as f64 + 1.0) / (k + 1.0)
            };
            if *is_upper {
                upper_x[*s] = px;
            } else {
                lower_x[*s] = px;
            }
        }
        let mut t = std::mem::take(&mut top_ports[n]);
        t.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
        let k = t.len() as f64;
        for (j, (_, s)) in t.iter().enumerate() {
            lower_x[*s] = if nodes[n].dummy {
                left + w / 2.0
            } else {
                left + w * (j as f64 + 1.0) / (k + 1.0)
            };
        }
    }
    // 5. Tracks: the label goes on the first segment of its edge.
    let label_seg: Vec<usize> = {
        let mut first = vec![usize::MAX; input.edges.len()];
        for (i, s) in segs.iter().enumerate() {
            if first[s.edge] == usize::MAX {
                first[s.edge] = i;
            }
        }
        first
    };
    let mut extent = vec![(0.0, 0.0); segs.len()];
    let mut label_x = vec![0.0; segs.len()];
    for (i, s) in segs.iter().enumerate() {
        let (a, b) = (upper_x[i].min(lower_x[i]), upper_x[i].max(lower_x[i]));
        let mut e = (a - 4.0, b + 4.0);
        if label_seg[s.edge] == i {
            // Beside the segment's first vertical, to the right.
            let lx = a + 4.0;
            label_x[i] = lx;
            e.1 = e.1.max(lx + input.edges[s.edge].label_w + 6.0);
        }
        extent[i] = e;
    }
    let mut track = vec![0usize; segs.len()];
    let mut tracks_in = vec![0usize; nrows];
    for (r, count) in tracks_in.iter_mut().enumerate() {
        let mut mine: Vec<usize> = (0..segs.len())
            .filter(|&i| nodes[segs[i].upper].row == r)
            .collect();
        mine.sort_by(|&p, &q| extent[p].0.total_cmp(&extent[q].0).then(p.cmp(&q)));
        let mut ends: Vec<f64> = Vec::new();
        for i in mine {
            match ends.iter().position(|&end| end < extent[i].0) {
                Some(t) => {
                    ends[t] = extent[i].1;
                    track[i] = t;
                }
                None => {
                    track[i] = ends.len();
                    ends.push(extent[i].1);
                }
            }
        }
        *count = ends.len();
    }
    // y of rows and channels.
    let mut row_y = vec![0.0; nrows];
    let mut y = MARGIN;
    for r in 0..nrows {
        row_y[r] = y;
        y += row_h[r];
        y += TRACK_H * tracks_in[r] as f64 + 16.0;
    }
    let height = y + MARGIN - 16.0;
    let track_y = |i: usize| {
        let r = nodes[segs[i].upper].row;
        row_y[r] + row_h[r] + TRACK_H * (track[i] as f64 + 1.0)
    };
    // Boxes: top-aligned in their row.
    let boxes: Vec<Rect> = (0..input.sizes.len())
        .map(|n| Rect {
            x: x[n],
            y: row_y[nodes[n].row],
            w: nodes[n].w,
            h: nodes[n].h,
        })
        .collect();
    // Edges: polylines through their segments.
    let mut edges = Vec::with_capacity(input.edges.len());
    for (e, chain) in chains.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = Vec::new();
        let mut label = Rect {
            x: 0.0,
            y: 0.0,
            w: input.edges[e].label_w,
            h: LABEL_H,
        };
        // Index of the chain's segments in `segs` (chains were flattened in order).
        let start: usize = chains[..e].iter().map(Vec::len).sum();
        for (k, s) in chain.iter().enumerate() {
            let i = start + k;
            let ty = track_y(i);
            let upper_y = if nodes[s.upper].dummy {
                row_y[nodes[s.upper].row]
            } else {
                row_y[nodes[s.upper].row] + nodes[s.upper].h
            };
            let lower_y = if s.same_row {
                row_y[nodes[s.lower].row] + nodes[s.lower].h
            } else {
                row_y[nodes[s.lower].row]
            };
            if k == 0 {
                pts.push((upper_x[i], upper_y));
            }
            pts.push((upper_x[i], ty));
            pts.push((lower_x[i], ty));
            if nodes[s.lower].dummy {
                // Through the dummy's row, to the next channel (the next segment goes on).
            } else {
                pts.push((lower_x[i], lower_y));
            }
            if label_seg[e] == i {
                label.x = label_x[i];
                label.y = ty - LABEL_H - 1.0;
            }
        }
        // Top-to-bottom as built; the edge goes from `from` to `to`.
        let from_is_top = {
            let (a, b) = (input.edges[e].from, input.edges[e].to);
            nodes[a].row < nodes[b].row || (nodes[a].row == nodes[b].row && a == chain[0].upper)
        };
        if !from_is_top {
            pts.reverse();
        }
        pts.dedup();
        edges.push(EdgeOut { points: pts, label });
    }
    let row_titles: Vec<Rect> = (0..nrows)
        .map(|r| Rect {
            x: MARGIN,
            y: row_y[r],
            w: ROW_TITLE_W - MARGIN - 8.0,
            h: LABEL_H * 2.0,
        })
        .collect();
    let mut width: f64 = ROW_TITLE_W + 200.0;
    for b in &boxes {
        width = width.max(b.right());
    }
    for e in &edges {
        width = width.max(e.label.right());
    }
    width += MARGIN;
    let bands = (0..nrows)
        .map(|r| Rect {
            x: 0.0,
            y: row_y[r] - 8.0,
            w: width,
            h: row_h[r] + 16.0,
        })
        .collect();
    Output {
        width,
        height,
        boxes,
        row_titles,
        bands,
        edges,
    }
}

/// Barycenter sweeps; keeps the order with the fewest crossings.
fn order_rows(order: &mut [Vec<usize>], up: &[Vec<usize>], down: &[Vec<usize>], n: usize) {
    let mut pos = vec![0.0f64; n];
    let set_pos = |order: &[Vec<usize>], pos: &mut Vec<f64>| {
        for row in order {
            for (i, &v) in row.iter().enumerate() {
                pos[v] = i as f64;
            }
        }
    };
    set_pos(order, &mut pos);
    let mut best = order.to_vec();
    let mut best_cross = crossings(order, down, &pos);
    for iter in 0..12 {
        let downward = iter % 2 == 0;
        let rows: Vec<usize> = if downward {
            (1..order.len()).collect()
        } else {
            (0..order.len().saturating_sub(1)).rev().collect()
        };
        for r in rows {
            let nb = if downward { up } else { down };
            let mut keyed: Vec<(f64, usize)> = order[r]
                .iter()
                .map(|&v| {
                    let k = if nb[v].is_empty() {
                        pos[v]
                    } else {
                        nb[v].iter().map(|&u| pos[u]).sum::<f64>() / nb[v].len() as f64
                    };
                    (k, v)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            order[r] = keyed.into_iter().map(|(_, v)| v).collect();
            for (i, &v) in order[r].iter().enumerate() {
                pos[v] = i as f64;
            }
        }
        let c = crossings(order, down, &pos);
        if c < best_cross {
            best_cross = c;
            best = order.to_vec();
        }
    }
    order.clone_from_slice(&best);
}

/// Crossings between segments of adjacent rows, counted pairwise.
fn crossings(order: &[Vec<usize>], down: &[Vec<usize>], pos: &[f64]) -> usize {
    let mut total = 0;
    for row in order {
        let segs: Vec<(f64, f64)> = row
            .iter()
            .flat_map(|&u| down[u].iter().map(move |&v| (u, v)))
            .map(|(u, v)| (pos[u], pos[v]))
            .collect();
        for i in 0..segs.len() {
            for j in i + 1..segs.len() {
                let (a, b) = (segs[i], segs[j]);
                if (a.0 - b.0) * (a.1 - b.1) < 0.0 {
                    total += 1;
                }
            }
        }
    }
    total
}

/// x of each node's left side: in order, with gaps, each as near the mean centre of its
/// neighbours (the rows above and below) as that allows. A few passes, alternating.
fn place_x(
    order: &[Vec<usize>],
    nodes: &[Node],
    up: &[Vec<usize>],
    down: &[Vec<usize>],
) -> Vec<f64> {
    let left = ROW_TITLE_W;
    // Dummies (vertical lines) need less room than boxes.
    let gap = |a: usize, b: usize| {
        if nodes[a].dummy || nodes[b].dummy {
            DUMMY_GAP
        } else {
            GAP
        }
    };
    let mut x = vec![0.0f64; nodes.len()];
    for row in order {
        let mut cx = left;
        for (i, &v) in row.iter().enumerate() {
            if i > 0 {
                cx += gap(row[i - 1], v);
            }
            x[v] = cx;
            cx += nodes[v].w;
        }
    }
    for iter in 0..8 {
        let rows: Vec<usize> = if iter % 2 == 0 {
            (0..order.len()).collect()
        } else {
            (0..order.len()).rev().collect()
        };
        for r in rows {
            let row = &order[r];
            let want: Vec<f64> = row
                .iter()
                .map(|&v| {
                    let nb: Vec<usize> = up[v].iter().chain(&down[v]).copied().collect();
                    if nb.is_empty() {
                        x[v]
                    } else {
                        nb.iter().map(|&u| x[u] + nodes[u].w / 2.0).sum::<f64>() / nb.len() as f64
                            - nodes[v].w / 2.0
                    }
                })
                .collect();
            // Left to right: as wanted, but never before the previous node's end and gap.
            let mut placed: Vec<f64> = Vec::with_capacity(want.len());
            for (i, &v) in row.iter().enumerate() {
                let min = if i == 0 {
                    left
                } else {
                    placed[i - 1] + nodes[row[i - 1]].w + gap(row[i - 1], v)
                };
                placed.push(want[i].max(min));
            }
            // Right to left: pull nodes that were pushed right back towards what they wanted,
            // as far as the next node allows.
            for i in (0..placed.len().saturating_sub(1)).rev() {
                let (v, next) = (row[i], row[i + 1]);
                let limit = placed[i + 1] - gap(v, next) - nodes[v].w;
                placed[i] = placed[i].min(limit).max(want[i].min(placed[i])).max(left);
            }
            // That pass may leave a gap too small where `left` stopped it: once more.
            for i in 0..placed.len() {
                if i > 0 {
                    let min = placed[i - 1] + nodes[row[i - 1]].w + gap(row[i - 1], row[i]);
                    placed[i] = placed[i].max(min);
                }
                x[row[i]] = placed[i];
            }
        }
        // Nothing holds the drawing at the left margin but this: shift it back.
        let min = order
            .iter()
            .flatten()
            .map(|&v| x[v])
            .fold(f64::INFINITY, f64::min);
        if min.is_finite() && min > left {
            for v in x.iter_mut() {
                *v -= min - left;
            }
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(rows: Vec<Vec<usize>>, edges: &[(usize, usize)]) -> Input {
        let n = rows.iter().map(Vec::len).sum();
        Input {
            sizes: (0..n).map(|i| (100.0 + 10.0 * i as f64, 60.0)).collect(),
            row_titles: rows.iter().map(|_| "row".into()).collect(),
            rows,
            edges: edges
                .iter()
                .map(|&(from, to)| EdgeIn {
                    from,
                    to,
                    label_w: 120.0,
                })
                .collect(),
        }
    }

    fn no_overlap(o: &Output) {
        let mut rects: Vec<Rect> = o.boxes.clone();
        rects.extend(o.edges.iter().map(|e| e.label));
        rects.extend(o.row_titles.iter().copied());
        for i in 0..rects.len() {
            for j in i + 1..rects.len() {
                assert!(
                    !rects[i].overlaps(&rects[j]),
                    "{:?} and {:?}",
                    rects[i],
                    rects[j]
                );
            }
        }
    }

    #[test]
    fn crossing_edges_are_uncrossed() {
        // 0 1 over 2 3, edges 0-3 and 1-2: the order of one row flips.
        let o = layout(&input(vec![vec![0, 1], vec![2, 3]], &[(0, 3), (1, 2)]));
        no_overlap(&o);
        let (a, b) = (o.boxes[0].x < o.boxes[1].x, o.boxes[3].x < o.boxes[2].x);
        assert_eq!(a, b, "edges cross: {:?}", o.boxes);
    }

    #[test]
    fn a_long_edge_goes_around_the_boxes_between() {
        let o = layout(&input(
            vec![vec![0], vec![1, 2, 3], vec![4]],
            &[(0, 4), (0, 2), (2, 4)],
        ));
        no_overlap(&o);
        let e = &o.edges[0];
        assert_eq!(e.points.first().unwrap().1, o.boxes[0].bottom());
        assert_eq!(e.points.last().unwrap().1, o.boxes[4].y);
        for w in e.points.windows(2) {
            assert!(
                w[0].0 == w[1].0 || w[0].1 == w[1].1,
                "not axis-parallel: {w:?}"
            );
            for b in &o.boxes[1..4] {
                assert!(!b.crossed_by(w[0], w[1]), "{w:?} crosses {b:?}");
            }
        }
    }

    #[test]
    fn upward_same_row_and_self_edges_start_and_end_at_their_boxes() {
        let o = layout(&input(vec![vec![0, 1], vec![2]], &[(2, 0), (0, 1), (1, 1)]));
        no_overlap(&o);
        let up = &o.edges[0].points;
        assert_eq!(
            up.first().unwrap().1,
            o.boxes[2].y,
            "from the lower box's top"
        );
        assert_eq!(up.last().unwrap().1, o.boxes[0].bottom());
        let same = &o.edges[1].points;
        assert_eq!(same.first().unwrap().1, o.boxes[0].bottom());
        assert_eq!(same.last().unwrap().1, o.boxes[1].bottom());
        let selfie = &o.edges[2].points;
        assert_ne!(selfie.first().unwrap().0, selfie.last().unwrap().0);
    }

    #[test]
    fn crossed_by() {
        let r = Rect {
            x: 0.0,
            y: 0.0,
            w: 10.0,
            h: 10.0,
        };
        assert!(r.crossed_by((5.0, -5.0), (5.0, 15.0)));
        assert!(
            !r.crossed_by((5.0, 10.0), (5.0, 15.0)),
            "from its edge outwards"
        );
        assert!(!r.crossed_by((10.0, -5.0), (10.0, 15.0)), "along its side");
        assert!(r.crossed_by((-5.0, 5.0), (15.0, 5.0)));
        assert!(!r.crossed_by((-5.0, 5.0), (0.0, 5.0)));
    }
}
