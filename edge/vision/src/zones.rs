//! Which zones a frame's motion falls into. Pure: spans of each zone's raster are walked over
//! the motion mask. Design: `edge/docs/design/motion.md` (Z1–Z3).

use vakt_core::geometry::{BBox, Polygon, Raster};

use crate::motion::MotionResult;

/// Motion inside one zone in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneMotion {
    /// Share of the whole frame that is moving inside the zone (Z1).
    pub area: f64,
    /// Normalised bounding box of the moving pixels inside the zone.
    pub bbox: Option<BBox>,
    /// Blobs whose centre lies in the zone (Z2).
    pub blobs: u32,
}

/// Zones rasterised for one working resolution.
#[derive(Debug, Clone)]
pub struct ZoneSet {
    names: Vec<Option<String>>,
    polygons: Vec<Option<Polygon>>,
    rasters: Vec<Raster>,
    size: (u32, u32),
}

impl ZoneSet {
    /// With no zones configured, one implicit zone covers the whole frame; its name is `None` (Z3).
    pub fn new(zones: &[(String, Polygon)]) -> Self {
        let (names, polygons) = if zones.is_empty() {
            (vec![None], vec![None])
        } else {
            zones.iter().map(|(n, p)| (Some(n.clone()), Some(p.clone()))).unzip()
        };
        ZoneSet { names, polygons, rasters: Vec::new(), size: (0, 0) }
    }

    pub fn names(&self) -> &[Option<String>] {
        &self.names
    }

    /// Measures the motion in every zone, in the order the zones were given.
    pub fn measure(&mut self, m: &MotionResult) -> Vec<ZoneMotion> {
        let (w, h) = (m.width, m.height);
        if self.size != (w, h) {
            self.rasters = self
                .polygons
                .iter()
                .map(|p| match p {
                    Some(p) => Raster::conservative(std::slice::from_ref(p), w, h),
                    None => full_raster(w, h),
                })
                .collect();
            self.size = (w, h);
        }
        let total = (w * h) as f64;
        self.rasters
            .iter()
            .map(|r| {
                let (mut n, mut x0, mut y0, mut x1, mut y1) = (0u64, u32::MAX, u32::MAX, 0u32, 0u32);
                for (y, spans) in r.rows.iter().enumerate() {
                    let row = &m.mask[y * w as usize..(y + 1) * w as usize];
                    for s in spans {
                        for x in s.x0..s.x1 {
                            if row[x as usize] != 0 {
                                n += 1;
                                x0 = x0.min(x);
                                x1 = x1.max(x + 1);
                                y0 = y0.min(y as u32);
                                y1 = y1.max(y as u32 + 1);
                            }
                        }
                    }
                }
                let bbox = (n > 0).then(|| {
                    [
                        x0 as f64 / w as f64,
                        y0 as f64 / h as f64,
                        (x1 - x0) as f64 / w as f64,
                        (y1 - y0) as f64 / h as f64,
                    ]
                });
                let blobs = m.blobs.iter().filter(|b| r.contains(b.x + b.w / 2, b.y + b.h / 2)).count() as u32;
                ZoneMotion { area: n as f64 / total, bbox, blobs }
            })
            .collect()
    }
}

fn full_raster(w: u32, h: u32) -> Raster {
    use vakt_core::geometry::Span;
    Raster { width: w, height: h, rows: vec![vec![Span { x0: 0, x1: w }]; h as usize] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::motion::Blob;

    #[test]
    fn motion_is_attributed_to_the_zone_it_is_in() {
        let (w, h) = (10u32, 10u32);
        let mut mask = vec![0u8; 100];
        for y in 6..8 {
            for x in 1..3 {
                mask[y * 10 + x] = 255;
            }
        }
        let m = MotionResult {
            width: w,
            height: h,
            mask,
            blobs: vec![Blob { x: 1, y: 6, w: 2, h: 2, area: 4 }],
            global_change: false,
        };
        let top = Polygon::new(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 0.5], [0.0, 0.5]]).unwrap();
        let bottom = Polygon::new(vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]).unwrap();
        let mut z = ZoneSet::new(&[("top".into(), top), ("bottom".into(), bottom)]);
        let r = z.measure(&m);
        assert_eq!(r[0], ZoneMotion { area: 0.0, bbox: None, blobs: 0 });
        assert_eq!(r[1].area, 0.04);
        assert_eq!(r[1].blobs, 1);
        let b = r[1].bbox.unwrap();
        assert!((b[0] - 0.1).abs() < 1e-9 && (b[1] - 0.6).abs() < 1e-9 && (b[2] - 0.2).abs() < 1e-9);
        let mut whole = ZoneSet::new(&[]);
        assert_eq!(whole.names(), &[None]);
        assert_eq!(whole.measure(&m)[0].area, 0.04);
    }
}
