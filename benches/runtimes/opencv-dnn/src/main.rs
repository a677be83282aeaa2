//! YOLOX-nano 416 through OpenCV 4.6 DNN (Debian) on one core: the same frames, letterbox,
//! decoding and NMS as the box's tract-onnx detector. Prints one JSON line.
//! Usage: vakt-bench-opencv-dnn FRAMES.bgr WIDTH HEIGHT MODEL_DIR

use std::time::Instant;

use anyhow::Context;
use opencv::core::{self as cvcore, Mat, Rect, Scalar, Size};
use opencv::prelude::*;
use opencv::{dnn, imgproc};

use vakt_core::detect::{Letterbox, ObjectClass, decode_yolox, nms};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 5, "usage: vakt-bench-opencv-dnn FRAMES.bgr WIDTH HEIGHT MODEL_DIR");
    let (w, h): (u32, u32) = (args[2].parse()?, args[3].parse()?);
    let raw = std::fs::read(&args[1]).with_context(|| format!("cannot read {}", args[1]))?;
    let manifest = vakt_core::models::builtin().into_iter().find(|m| m.name == "yolox_nano").context("manifest")?;
    let weights = std::path::Path::new(&args[4]).join("yolox_nano/yolox_nano.onnx");
    let sha = vakt_core::models::sha256_file(&weights)?;
    anyhow::ensure!(
        manifest.files.iter().any(|f| f.sha256 == sha),
        "{} does not match its manifest",
        weights.display()
    );
    cvcore::set_num_threads(1)?;
    let mut net = dnn::read_net_from_onnx(&weights)?;
    net.set_preferable_backend(dnn::DNN_BACKEND_OPENCV)?;
    net.set_preferable_target(dnn::DNN_TARGET_CPU)?;
    let side = 416;
    let mut padded = Mat::new_rows_cols_with_default(side, side, cvcore::CV_8UC3, Scalar::all(114.0))?;
    let lb = Letterbox::new(side as u32, w, h);
    let (rw, rh) = lb.resized();
    let mut pre = Vec::new();
    let mut infer = Vec::new();
    let mut people = 0usize;
    let frames: Vec<&[u8]> = raw.chunks_exact((w * h * 3) as usize).collect();
    for (i, f) in frames.iter().enumerate() {
        let t0 = Instant::now();
        // SAFETY: `f` holds h rows of 3·w bytes and outlives `src`.
        let src = unsafe {
            Mat::new_rows_cols_with_data_unsafe_def(
                h as i32,
                w as i32,
                cvcore::CV_8UC3,
                f.as_ptr() as *mut std::ffi::c_void,
            )?
        };
        padded.set_to(&Scalar::all(114.0), &cvcore::no_array())?;
        {
            let mut roi = Mat::roi_mut(&mut padded, Rect::new(0, 0, rw as i32, rh as i32))?;
            let mut resized = Mat::default();
            imgproc::resize(&src, &mut resized, Size::new(rw as i32, rh as i32), 0.0, 0.0, imgproc::INTER_LINEAR)?;
            resized.copy_to(&mut roi)?;
        }
        let blob =
            dnn::blob_from_image(&padded, 1.0, Size::new(side, side), Scalar::default(), false, false, cvcore::CV_32F)?;
        let t1 = Instant::now();
        net.set_input(&blob, "", 1.0, Scalar::default())?;
        let out = net.forward_single("")?;
        let t2 = Instant::now();
        let dets = nms(decode_yolox(out.data_typed::<f32>()?, 80, &lb, 0.2).map_err(anyhow::Error::msg)?, 0.45);
        people += dets.iter().filter(|d| d.class == ObjectClass::Person && d.score >= 0.5).count();
        if i >= 3 {
            pre.push((t1 - t0).as_secs_f64() * 1e3);
            infer.push((t2 - t1).as_secs_f64() * 1e3);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{{\"runtime\": \"opencv-dnn 4.6 (Debian)\", \"model\": \"yolox_nano 416\", \"threads\": 1, \"frames\": {}, \"ms_median_preprocess\": {:.2}, \"ms_median_inference\": {:.2}, \"people_per_frame\": {:.2}}}",
        infer.len(),
        med(&mut pre),
        med(&mut infer),
        people as f64 / frames.len() as f64
    );
    Ok(())
}
