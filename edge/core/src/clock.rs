//! Time seams. The box stamps events with wall-clock time; offline replay derives wall-clock
//! time from media time so two runs give identical bytes. Design: `edge/docs/design/time.md`.

use time::OffsetDateTime;

/// Maps a frame's media time (seconds since the stream began) to the wall-clock time to stamp.
pub trait Clock: Send {
    fn wall(&self, media_time_s: f64) -> OffsetDateTime;
}

/// Live boxes: the system clock at the moment of the call.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self, _media_time_s: f64) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Offline replay: `anchor + media time`, so output depends only on the input.
#[derive(Debug, Clone, Copy)]
pub struct MediaClock {
    pub anchor: OffsetDateTime,
}

impl Clock for MediaClock {
    fn wall(&self, media_time_s: f64) -> OffsetDateTime {
        self.anchor + time::Duration::seconds_f64(media_time_s)
    }
}
