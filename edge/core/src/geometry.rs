//! Polygons in normalised frame coordinates, their validation, and the conservative rasteriser
//! that turns them into pixel spans at any resolution. Design: `edge/docs/design/privacy-levels.md`
//! (invariant P2: a mask covers every pixel its polygon touches).

use std::fmt;

/// A point in normalised frame coordinates: (0, 0) is the top-left corner of the frame,
/// (1, 1) the bottom-right one.
pub type Point = [f64; 2];

/// Why a polygon was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolygonError {
    #[error("has {0} points; a polygon needs at least 3")]
    TooFewPoints(usize),
    #[error("point {index} = [{x}, {y}] lies outside the frame; coordinates are normalised to 0.0..=1.0")]
    OutOfRange { index: usize, x: f64, y: f64 },
    #[error("edges {a} and {b} cross; the polygon must not intersect itself")]
    SelfIntersecting { a: usize, b: usize },
    #[error("has zero area (all points on one line)")]
    Degenerate,
    #[error("covers the whole frame ({percent:.1} % of it); such a mask leaves nothing to see")]
    CoversFrame { percent: f64 },
}

/// A simple (non self-intersecting) polygon with at least three points, in normalised coordinates.
#[derive(Clone, PartialEq)]
pub struct Polygon {
    points: Vec<Point>,
}

impl fmt::Debug for Polygon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Polygon{:?}", self.points)
    }
}

/// The largest share of the frame one polygon may cover.
pub const MAX_POLYGON_COVER: f64 = 0.99;

impl Polygon {
    /// Validates `points` into a polygon: at least 3 points, all in 0..=1, non-zero area,
    /// no crossing edges, and not covering (nearly) the whole frame.
    pub fn new(points: Vec<Point>) -> Result<Self, PolygonError> {
        if points.len() < 3 {
            return Err(PolygonError::TooFewPoints(points.len()));
        }
        for (index, p) in points.iter().enumerate() {
            let ok = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
            if !ok(p[0]) || !ok(p[1]) {
                return Err(PolygonError::OutOfRange { index, x: p[0], y: p[1] });
            }
        }
        if let Some((a, b)) = first_crossing(&points) {
            return Err(PolygonError::SelfIntersecting { a, b });
        }
        if signed_area(&points).abs() < 1e-9 {
            return Err(PolygonError::Degenerate);
        }
        let cover = signed_area(&points).abs();
        if cover >= MAX_POLYGON_COVER {
            return Err(PolygonError::CoversFrame { percent: cover * 100.0 });
        }
        Ok(Polygon { points })
    }

    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Share of the frame the polygon covers (0..1).
    pub fn area(&self) -> f64 {
        signed_area(&self.points).abs()
    }

    /// Even-odd point-in-polygon test in normalised coordinates.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        let mut inside = false;
        let n = self.points.len();
        let mut j = n - 1;
        for i in 0..n {
            let (xi, yi) = (self.points[i][0], self.points[i][1]);
            let (xj, yj) = (self.points[j][0], self.points[j][1]);
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

fn signed_area(points: &[Point]) -> f64 {
    let n = points.len();
    let mut s = 0.0;
    for i in 0..n {
        let a = points[i];
        let b = points[(i + 1) % n];
        s += a[0] * b[1] - b[0] * a[1];
    }
    s / 2.0
}

fn orient(a: Point, b: Point, c: Point) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

fn on_segment(a: Point, b: Point, p: Point) -> bool {
    p[0] >= a[0].min(b[0]) - 1e-12
        && p[0] <= a[0].max(b[0]) + 1e-12
        && p[1] >= a[1].min(b[1]) - 1e-12
        && p[1] <= a[1].max(b[1]) + 1e-12
}

fn segments_intersect(p1: Point, p2: Point, p3: Point, p4: Point) -> bool {
    let d1 = orient(p3, p4, p1);
    let d2 = orient(p3, p4, p2);
    let d3 = orient(p1, p2, p3);
    let d4 = orient(p1, p2, p4);
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0)) && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0)) {
        return true;
    }
    let eps = 1e-15;
    (d1.abs() < eps && on_segment(p3, p4, p1))
        || (d2.abs() < eps && on_segment(p3, p4, p2))
        || (d3.abs() < eps && on_segment(p1, p2, p3))
        || (d4.abs() < eps && on_segment(p1, p2, p4))
}

/// The first pair of edges (by index) that cross or touch, other than neighbours sharing a vertex.
fn first_crossing(points: &[Point]) -> Option<(usize, usize)> {
    let n = points.len();
    for i in 0..n {
        for j in i + 1..n {
            let adjacent = j == i + 1 || (i == 0 && j == n - 1);
            let (a1, a2) = (points[i], points[(i + 1) % n]);
            let (b1, b2) = (points[j], points[(j + 1) % n]);
            if adjacent {
                // Neighbours share one vertex; they may only meet there. Collinear overlap folds back.
                let shared = if j == i + 1 { a2 } else { a1 };
                let (other_a, other_b) = if j == i + 1 { (a1, b2) } else { (a2, b1) };
                if orient(a1, a2, if j == i + 1 { b2 } else { b1 }).abs() < 1e-15 {
                    // collinear: refuse if they fold back onto each other
                    let da = [other_a[0] - shared[0], other_a[1] - shared[1]];
                    let db = [other_b[0] - shared[0], other_b[1] - shared[1]];
                    if da[0] * db[0] + da[1] * db[1] > 0.0 {
                        return Some((i, j));
                    }
                }
                continue;
            }
            if segments_intersect(a1, a2, b1, b2) {
                return Some((i, j));
            }
        }
    }
    None
}

/// A half-open run of pixels `x0..x1` on one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub x0: u32,
    pub x1: u32,
}

/// The pixels of a `width` × `height` grid that a set of polygons touches, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raster {
    pub width: u32,
    pub height: u32,
    /// `rows[y]` holds sorted, disjoint spans.
    pub rows: Vec<Vec<Span>>,
}

impl Raster {
    /// Rasterises `polygons` conservatively: a pixel is included when the polygon's interior
    /// overlaps the pixel's square by any positive area (touching only at an edge or a corner
    /// does not count).
    pub fn conservative(polygons: &[Polygon], width: u32, height: u32) -> Raster {
        let mut rows: Vec<Vec<(f64, f64)>> = vec![Vec::new(); height as usize];
        for poly in polygons {
            let pts: Vec<(f64, f64)> =
                poly.points().iter().map(|p| (p[0] * width as f64, p[1] * height as f64)).collect();
            add_polygon_intervals(&pts, height, &mut rows);
        }
        let rows = rows.into_iter().map(|iv| intervals_to_spans(iv, width)).collect();
        Raster { width, height, rows }
    }

    pub fn contains(&self, x: u32, y: u32) -> bool {
        self.rows.get(y as usize).is_some_and(|r| r.iter().any(|s| x >= s.x0 && x < s.x1))
    }

    /// Number of pixels in the raster.
    pub fn count(&self) -> u64 {
        self.rows.iter().flatten().map(|s| (s.x1 - s.x0) as u64).sum()
    }

    /// Sets every covered pixel of an 8-bit plane (`stride` bytes a row, `bpp` bytes a pixel)
    /// to `value`.
    pub fn fill(&self, plane: &mut [u8], stride: usize, bpp: usize, value: &[u8]) {
        debug_assert_eq!(value.len(), bpp);
        for (y, spans) in self.rows.iter().enumerate() {
            let row = &mut plane[y * stride..];
            for s in spans {
                for px in row[s.x0 as usize * bpp..s.x1 as usize * bpp].chunks_exact_mut(bpp) {
                    px.copy_from_slice(value);
                }
            }
        }
    }

    /// The raster of a subsampled plane (chroma): a sample covering `sx` × `sy` pixels of this
    /// raster is included when any of those pixels is. Exact for odd sizes too, where the last
    /// sample covers fewer pixels.
    pub fn subsample(&self, sx: u32, sy: u32) -> Raster {
        let (w, h) = (self.width.div_ceil(sx), self.height.div_ceil(sy));
        let rows = (0..h)
            .map(|y| {
                let mut iv: Vec<(u32, u32)> = (y * sy..((y + 1) * sy).min(self.height))
                    .flat_map(|ly| self.rows[ly as usize].iter().map(|s| (s.x0 / sx, s.x1.div_ceil(sx))))
                    .collect();
                iv.sort_unstable();
                let mut spans: Vec<Span> = Vec::new();
                for (x0, x1) in iv {
                    match spans.last_mut() {
                        Some(s) if x0 <= s.x1 => s.x1 = s.x1.max(x1),
                        _ => spans.push(Span { x0, x1 }),
                    }
                }
                spans
            })
            .collect();
        Raster { width: w, height: h, rows }
    }

    /// A dense 0/255 mask, `width * height` bytes.
    pub fn to_mask(&self) -> Vec<u8> {
        let mut m = vec![0u8; (self.width * self.height) as usize];
        self.fill(&mut m, self.width as usize, 1, &[255]);
        m
    }
}

/// For every pixel row the polygon reaches, adds the x-intervals of polygon ∩ row-strip.
///
/// Between consecutive "critical" heights (the strip's borders and any vertex inside it) the set
/// of edges crossing the strip is fixed and each edge is a straight line, so the union of the
/// even-odd spans over that slab is bounded by the edges' x at the slab's two ends.
fn add_polygon_intervals(pts: &[(f64, f64)], height: u32, rows: &mut [Vec<(f64, f64)>]) {
    let n = pts.len();
    let ymin = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let ymax = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let first = ymin.floor().max(0.0) as u32;
    let last = (ymax.ceil() as u32).min(height);
    let mut crossings: Vec<(f64, f64, f64)> = Vec::new();
    for row in first..last {
        let (y0, y1) = (row as f64, row as f64 + 1.0);
        let mut crit: Vec<f64> = vec![y0, y1];
        crit.extend(pts.iter().map(|p| p.1).filter(|&y| y > y0 && y < y1));
        crit.sort_by(f64::total_cmp);
        crit.dedup();
        for w in crit.windows(2) {
            let (ya, yb) = (w[0], w[1]);
            let ym = 0.5 * (ya + yb);
            crossings.clear();
            for i in 0..n {
                let (p, q) = (pts[i], pts[(i + 1) % n]);
                if (p.1 < ym && q.1 > ym) || (q.1 < ym && p.1 > ym) {
                    let x_at = |y: f64| p.0 + (q.0 - p.0) * (y - p.1) / (q.1 - p.1);
                    crossings.push((x_at(ym), x_at(ya), x_at(yb)));
                }
            }
            crossings.sort_by(|a, b| a.0.total_cmp(&b.0));
            for pair in crossings.chunks_exact(2) {
                let (l, r) = (pair[0], pair[1]);
                rows[row as usize].push((l.1.min(l.2), r.1.max(r.2)));
            }
        }
    }
}

fn intervals_to_spans(mut iv: Vec<(f64, f64)>, width: u32) -> Vec<Span> {
    const EPS: f64 = 1e-9;
    iv.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut spans: Vec<Span> = Vec::new();
    for (lo, hi) in iv {
        if hi - lo <= EPS {
            continue;
        }
        // pixel x is touched when lo < x + 1 and hi > x
        let x0 = ((lo + EPS).floor().max(0.0)) as u32;
        let x1 = (((hi - EPS).ceil()).max(0.0) as u32).min(width);
        if x0 >= x1 {
            continue;
        }
        match spans.last_mut() {
            Some(s) if x0 <= s.x1 => s.x1 = s.x1.max(x1),
            _ => spans.push(Span { x0, x1 }),
        }
    }
    spans
}

/// An axis-aligned box in normalised coordinates: `[x, y, w, h]`.
pub type BBox = [f64; 4];

#[cfg(test)]
mod tests {
    use super::*;

    fn poly(p: &[[f64; 2]]) -> Polygon {
        Polygon::new(p.to_vec()).unwrap()
    }

    #[test]
    fn validation_table() {
        let cases: Vec<(Vec<Point>, Option<&str>)> = vec![
            (vec![[0.1, 0.1], [0.5, 0.1]], Some("at least 3")),
            (vec![[0.1, 0.1], [0.5, 0.1], [1.2, 0.5]], Some("outside the frame")),
            (vec![[0.1, 0.1], [0.5, 0.1], [0.9, 0.1]], Some("cross")),
            (vec![[0.1, 0.1], [0.9, 0.8], [0.9, 0.1], [0.1, 0.9]], Some("cross")),
            (vec![[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]], Some("cross")),
            (vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], Some("whole frame")),
            (vec![[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]], None),
            (vec![[0.1, 0.1], [0.9, 0.1], [0.5, 0.5], [0.9, 0.9], [0.1, 0.9]], None),
        ];
        for (pts, want) in cases {
            let got = Polygon::new(pts.clone());
            match want {
                None => assert!(got.is_ok(), "{pts:?}: {got:?}"),
                Some(w) => {
                    let e = got.expect_err(w).to_string();
                    assert!(e.contains(w), "{pts:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn pixel_aligned_rectangle_is_exact() {
        // 0.25..0.75 of 8 px = 2..6: exactly pixels 2,3,4,5 in x and y
        let r = Raster::conservative(&[poly(&[[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]])], 8, 8);
        for y in 0..8 {
            for x in 0..8 {
                assert_eq!(r.contains(x, y), (2..6).contains(&x) && (2..6).contains(&y), "({x},{y})");
            }
        }
        assert_eq!(r.count(), 16);
    }

    #[test]
    fn any_touched_pixel_is_masked() {
        // a sliver triangle that crosses pixel squares without covering any pixel centre
        let p = poly(&[[0.101, 0.101], [0.899, 0.13], [0.102, 0.14]]);
        let (w, h) = (100u32, 100u32);
        let r = Raster::conservative(std::slice::from_ref(&p), w, h);
        // brute force: a pixel is touched if any of a dense set of sample points inside it is inside
        let n = 16;
        for y in 0..h {
            for x in 0..w {
                let mut touched = false;
                for sy in 0..n {
                    for sx in 0..n {
                        let fx = (x as f64 + (sx as f64 + 0.5) / n as f64) / w as f64;
                        let fy = (y as f64 + (sy as f64 + 0.5) / n as f64) / h as f64;
                        touched |= p.contains(fx, fy);
                    }
                }
                if touched {
                    assert!(r.contains(x, y), "touched pixel ({x},{y}) not in raster");
                }
            }
        }
        // and it is tight: nothing outside the polygon's bounding box
        for y in 0..h {
            for x in 0..w {
                if r.contains(x, y) {
                    assert!((10..=90).contains(&x) && (10..=14).contains(&y), "({x},{y}) outside bbox");
                }
            }
        }
    }

    #[test]
    fn concave_polygon_keeps_its_notch() {
        // a U shape: the notch between the arms must stay unmasked
        let u = poly(&[[0.0, 0.0], [0.3, 0.0], [0.3, 0.6], [0.7, 0.6], [0.7, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]);
        let r = Raster::conservative(&[u], 10, 10);
        assert!(!r.contains(5, 2), "the notch is not part of the polygon");
        assert!(r.contains(1, 2) && r.contains(8, 2) && r.contains(5, 8));
    }

    #[test]
    fn subsampling_covers_every_block_with_a_covered_pixel() {
        let p = poly(&[[0.13, 0.07], [0.71, 0.21], [0.45, 0.88]]);
        for (w, h) in [(16u32, 12u32), (17, 13)] {
            let luma = Raster::conservative(std::slice::from_ref(&p), w, h);
            let chroma = luma.subsample(2, 2);
            assert_eq!((chroma.width, chroma.height), (w.div_ceil(2), h.div_ceil(2)));
            for y in 0..chroma.height {
                for x in 0..chroma.width {
                    let any = (2 * y..(2 * y + 2).min(h))
                        .any(|ly| (2 * x..(2 * x + 2).min(w)).any(|lx| luma.contains(lx, ly)));
                    assert_eq!(chroma.contains(x, y), any, "{w}x{h} chroma ({x},{y})");
                }
            }
        }
    }

    #[test]
    fn fill_writes_only_covered_pixels() {
        let r = Raster::conservative(&[poly(&[[0.5, 0.0], [1.0, 0.0], [1.0, 0.5], [0.5, 0.5]])], 4, 4);
        let mut plane = vec![9u8; 4 * 3 * 4];
        r.fill(&mut plane, 12, 3, &[1, 2, 3]);
        assert_eq!(&plane[0..12], &[9, 9, 9, 9, 9, 9, 1, 2, 3, 1, 2, 3]);
        assert_eq!(&plane[24..36], &[9; 12]);
    }
}
