//! Object detections and the pure parts of detection: the classes Vakt cares about, letterbox
//! geometry, decoding YOLOX output tensors and non-maximum suppression. The inference runtime
//! lives in `vakt-vision`; everything here is plain arithmetic on slices, table-tested.

use serde::Serialize;

/// The object classes Vakt reports. Everything else a COCO detector finds is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectClass {
    Person,
    Bicycle,
    Car,
    Motorcycle,
    Bus,
    Truck,
}

impl ObjectClass {
    pub const ALL: [ObjectClass; 6] = [
        ObjectClass::Person,
        ObjectClass::Bicycle,
        ObjectClass::Car,
        ObjectClass::Motorcycle,
        ObjectClass::Bus,
        ObjectClass::Truck,
    ];

    /// From a COCO-80 class index (0 person, 1 bicycle, 2 car, 3 motorcycle, 5 bus, 7 truck).
    pub fn from_coco(index: usize) -> Option<ObjectClass> {
        match index {
            0 => Some(ObjectClass::Person),
            1 => Some(ObjectClass::Bicycle),
            2 => Some(ObjectClass::Car),
            3 => Some(ObjectClass::Motorcycle),
            5 => Some(ObjectClass::Bus),
            7 => Some(ObjectClass::Truck),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectClass::Person => "person",
            ObjectClass::Bicycle => "bicycle",
            ObjectClass::Car => "car",
            ObjectClass::Motorcycle => "motorcycle",
            ObjectClass::Bus => "bus",
            ObjectClass::Truck => "truck",
        }
    }

    pub fn parse(s: &str) -> Option<ObjectClass> {
        ObjectClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Car, bus and truck are one family: detectors swap them for the same vehicle, so NMS and
    /// the tracker treat them as one.
    pub fn same_family(self, other: ObjectClass) -> bool {
        use ObjectClass::*;
        self == other || matches!((self, other), (Car | Bus | Truck, Car | Bus | Truck))
    }
}

/// An axis-aligned box in pixels: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct BoxPx {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BoxPx {
    pub fn new(x: f32, y: f32, w: f32, h: f32) -> BoxPx {
        BoxPx { x, y, w, h }
    }
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }
    pub fn right(&self) -> f32 {
        self.x + self.w
    }
    pub fn bottom(&self) -> f32 {
        self.y + self.h
    }
    pub fn centre(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }
    /// Intersection over union; 0 for empty boxes.
    pub fn iou(&self, o: &BoxPx) -> f32 {
        let iw = (self.right().min(o.right()) - self.x.max(o.x)).max(0.0);
        let ih = (self.bottom().min(o.bottom()) - self.y.max(o.y)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
    /// Clipped to a `width` × `height` image.
    pub fn clip(&self, width: f32, height: f32) -> BoxPx {
        let x0 = self.x.clamp(0.0, width);
        let y0 = self.y.clamp(0.0, height);
        let x1 = self.right().clamp(0.0, width);
        let y1 = self.bottom().clamp(0.0, height);
        BoxPx { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }
    }
}

/// One detection in source-image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub class: ObjectClass,
    pub score: f32,
    pub bbox: BoxPx,
}

/// Letterboxing into a square network input, image at the top-left, padding right and bottom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Network input side in pixels.
    pub input: u32,
    /// Source pixels → input pixels.
    pub scale: f32,
    /// Source size.
    pub width: u32,
    pub height: u32,
}

impl Letterbox {
    pub fn new(input: u32, width: u32, height: u32) -> Letterbox {
        let scale = (input as f32 / width as f32).min(input as f32 / height as f32);
        Letterbox { input, scale, width, height }
    }
    /// Size of the resized image inside the input.
    pub fn resized(&self) -> (u32, u32) {
        (
            ((self.width as f32 * self.scale).round() as u32).clamp(1, self.input),
            ((self.height as f32 * self.scale).round() as u32).clamp(1, self.input),
        )
    }
    /// A box in input pixels back to source pixels, clipped to the source.
    pub fn to_source(&self, b: BoxPx) -> BoxPx {
        let s = self.scale;
        BoxPx { x: b.x / s, y: b.y / s, w: b.w / s, h: b.h / s }.clip(self.width as f32, self.height as f32)
    }
}

/// The strides of YOLOX's three output levels.
pub const YOLOX_STRIDES: [u32; 3] = [8, 16, 32];

/// Rows YOLOX produces for an `input`-pixel square: one per grid cell of each level.
pub fn yolox_rows(input: u32) -> usize {
    YOLOX_STRIDES.iter().map(|s| ((input / s) * (input / s)) as usize).sum()
}

/// Decodes YOLOX output `[rows, 5 + classes]` (cx, cy, w, h raw; objectness and class scores
/// already sigmoid) into detections of Vakt's classes with score ≥ `min_score`, in source pixels.
/// score = objectness × class score. Returns an error naming the shape when it does not fit.
pub fn decode_yolox(out: &[f32], classes: usize, lb: &Letterbox, min_score: f32) -> Result<Vec<Detection>, String> {
    let cols = 5 + classes;
    let rows = yolox_rows(lb.input);
    if out.len() != rows * cols {
        return Err(format!(
            "YOLOX output has {} values; expected {rows} rows × {cols} for a {}-pixel input",
            out.len(),
            lb.input
        ));
    }
    let mut dets = Vec::new();
    let mut row = 0usize;
    for s in YOLOX_STRIDES {
        let g = lb.input / s;
        for gy in 0..g {
            for gx in 0..g {
                let r = &out[row * cols..(row + 1) * cols];
                row += 1;
                let obj = r[4];
                // NaN or infinite output (a broken model) is skipped, never ranked first
                if obj.is_nan() || obj < min_score || !r[..4].iter().all(|v| v.is_finite()) {
                    continue;
                }
                for (coco, &cls_score) in r[5..].iter().enumerate() {
                    let score = obj * cls_score;
                    if !score.is_finite() || score < min_score {
                        continue;
                    }
                    let Some(class) = ObjectClass::from_coco(coco) else { continue };
                    let sf = s as f32;
                    let cx = (r[0] + gx as f32) * sf;
                    let cy = (r[1] + gy as f32) * sf;
                    let w = r[2].clamp(-10.0, 10.0).exp() * sf;
                    let h = r[3].clamp(-10.0, 10.0).exp() * sf;
                    let bbox = lb.to_source(BoxPx::new(cx - w / 2.0, cy - h / 2.0, w, h));
                    if bbox.area() > 0.0 {
                        dets.push(Detection { class, score, bbox });
                    }
                }
            }
        }
    }
    Ok(dets)
}

/// Greedy non-maximum suppression per class family: keeps the highest-scoring box and drops boxes
/// of the same family (car, bus and truck are one) overlapping it by IoU > `iou`. Output sorted by
/// score, highest first.
pub fn nms(mut dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if keep.iter().all(|k| !k.class.same_family(d.class) || k.bbox.iou(&d.bbox) <= iou) {
            keep.push(d);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let a = BoxPx::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&BoxPx::new(20.0, 0.0, 5.0, 5.0)), 0.0);
        // half overlap: inter 50, union 150
        assert!((a.iou(&BoxPx::new(5.0, 0.0, 10.0, 10.0)) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(a.iou(&BoxPx::new(0.0, 0.0, 0.0, 0.0)), 0.0);
    }

    #[test]
    fn letterbox_maps_back_to_source() {
        let lb = Letterbox::new(416, 768, 576);
        assert!((lb.scale - 416.0 / 768.0).abs() < 1e-6);
        assert_eq!(lb.resized(), (416, 312));
        let b = lb.to_source(BoxPx::new(41.6, 20.8, 104.0, 52.0));
        assert!((b.x - 76.8).abs() < 1e-3 && (b.y - 38.4).abs() < 1e-3 && (b.w - 192.0).abs() < 1e-3);
        // a box reaching into the padding is clipped to the source
        let c = lb.to_source(BoxPx::new(400.0, 300.0, 100.0, 100.0));
        assert!((c.right() - 768.0).abs() < 1e-3 && (c.bottom() - 576.0).abs() < 1e-3);
    }

    /// A synthetic YOLOX output with one confident person at a chosen cell of stride 16.
    #[test]
    fn yolox_decoding_places_boxes_on_the_grid() {
        let input = 416;
        let classes = 80;
        let cols = 5 + classes;
        let mut out = vec![0.0f32; yolox_rows(input) * cols];
        assert_eq!(yolox_rows(input), 3549);
        // stride 16 starts after 52*52 rows; cell (gx 10, gy 5)
        let row = 52 * 52 + 5 * 26 + 10;
        let r = &mut out[row * cols..(row + 1) * cols];
        r[0] = 0.5; // cx = (0.5 + 10) * 16 = 168
        r[1] = 0.5; // cy = (0.5 + 5) * 16 = 88
        r[2] = (4.0f32).ln(); // w = 4 * 16 = 64
        r[3] = (8.0f32).ln(); // h = 128
        r[4] = 0.9;
        r[5] = 0.8; // person
        r[5 + 2] = 0.3; // car, below the threshold once multiplied
        r[5 + 9] = 0.99; // traffic light: not a Vakt class
        let lb = Letterbox::new(input, 416, 416);
        let d = decode_yolox(&out, classes, &lb, 0.5).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class, ObjectClass::Person);
        assert!((d[0].score - 0.72).abs() < 1e-6);
        let b = d[0].bbox;
        assert!((b.x - 136.0).abs() < 1e-3 && (b.y - 24.0).abs() < 1e-3, "{b:?}");
        assert!((b.w - 64.0).abs() < 1e-3 && (b.h - 128.0).abs() < 1e-3, "{b:?}");
        // a NaN row is skipped, not ranked first
        let nan_row = 52 * 52 + 5 * 26 + 11;
        out[nan_row * cols + 4] = f32::NAN;
        out[nan_row * cols + 5] = 0.9;
        assert_eq!(decode_yolox(&out, classes, &lb, 0.5).unwrap().len(), 1);
        let e = decode_yolox(&out[..100], classes, &lb, 0.5).unwrap_err();
        assert!(e.contains("expected 3549 rows"), "{e}");
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster_per_class() {
        let p = |x: f32, s: f32, class| Detection { class, score: s, bbox: BoxPx::new(x, 0.0, 10.0, 10.0) };
        let kept = nms(
            vec![
                p(0.0, 0.6, ObjectClass::Person),
                p(1.0, 0.9, ObjectClass::Person),
                p(50.0, 0.7, ObjectClass::Person),
                p(1.0, 0.8, ObjectClass::Car),    // other class: kept despite overlap
                p(1.5, 0.75, ObjectClass::Truck), // the same vehicle called a truck: dropped
            ],
            0.45,
        );
        let got: Vec<(f32, f32)> = kept.iter().map(|d| (d.bbox.x, d.score)).collect();
        assert_eq!(got, vec![(1.0, 0.9), (1.0, 0.8), (50.0, 0.7)]);
    }

    #[test]
    fn classes_round_trip() {
        for c in ObjectClass::ALL {
            assert_eq!(ObjectClass::parse(c.as_str()), Some(c));
        }
        assert_eq!(ObjectClass::from_coco(9), None);
    }
}
