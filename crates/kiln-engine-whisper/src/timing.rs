//! Word timestamps from cross-attention, the method of openai-whisper's `timing.py`: the
//! alignment heads' attention of each text token over the audio frames, normalized per frame,
//! median-filtered along time and averaged over heads, then a dynamic-time-warping path through
//! (token × frame); a word starts where the path enters its first token's row.

/// Encoder frames per second (one per 20 ms).
pub(crate) const FRAMES_PER_SECOND: f32 = 50.0;
const MEDIAN_WIDTH: usize = 7;

/// One head's pre-softmax cross-attention scores: `rows` tokens × `stride` frames, row-major.
pub(crate) struct HeadScores {
    pub values: Vec<f32>,
    pub rows: usize,
    pub stride: usize,
}

/// The (token × frame) similarity matrix: rows `first_row..rows - 1` (the last row is the
/// end-of-text query) of the heads' softmaxed, normalized, filtered and averaged scores, over
/// the first `frames` frames. Returns the matrix row-major and its row count.
pub(crate) fn alignment_matrix(
    heads: &[HeadScores],
    frames: usize,
    first_row: usize,
) -> (Vec<f32>, usize) {
    let Some(rows) = heads.first().map(|h| h.rows) else {
        return (Vec::new(), 0);
    };
    let frames = heads.iter().fold(frames, |f, h| f.min(h.stride));
    let kept = rows.saturating_sub(first_row + 1);
    let mut sum = vec![0f32; kept * frames];
    if frames == 0 || kept == 0 {
        return (sum, kept);
    }
    for head in heads.iter().filter(|h| h.rows == rows) {
        // Softmax over this window's frames only.
        let mut w = vec![0f32; rows * frames];
        for r in 0..rows {
            let src = &head.values[r * head.stride..r * head.stride + frames];
            let dst = &mut w[r * frames..(r + 1) * frames];
            let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0f32;
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (s - max).exp();
                total += *d;
            }
            dst.iter_mut()
                .for_each(|d| *d /= total.max(f32::MIN_POSITIVE));
        }
        // Standardize each frame's column over the tokens.
        for f in 0..frames {
            let mean = (0..rows).map(|r| w[r * frames + f]).sum::<f32>() / rows as f32;
            let var = (0..rows)
                .map(|r| (w[r * frames + f] - mean).powi(2))
                .sum::<f32>()
                / rows as f32;
            let std = var.sqrt().max(1e-10);
            for r in 0..rows {
                w[r * frames + f] = (w[r * frames + f] - mean) / std;
            }
        }
        for (k, r) in (first_row..first_row + kept).enumerate() {
            let filtered = median_filter(&w[r * frames..(r + 1) * frames], MEDIAN_WIDTH);
            for (s, v) in sum[k * frames..(k + 1) * frames].iter_mut().zip(filtered) {
                *s += v;
            }
        }
    }
    let n = heads.len() as f32;
    sum.iter_mut().for_each(|s| *s /= n);
    (sum, kept)
}

/// Running median of `width` (odd) values, the ends mirrored (without repeating the edge).
fn median_filter(x: &[f32], width: usize) -> Vec<f32> {
    let pad = width / 2;
    if x.len() <= pad {
        return x.to_vec();
    }
    let n = x.len() as isize;
    let at = |i: isize| -> f32 {
        let j = if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        };
        x[j.clamp(0, n - 1) as usize]
    };
    let mut window = vec![0f32; width];
    (0..n)
        .map(|i| {
            for (k, slot) in window.iter_mut().enumerate() {
                *slot = at(i - pad as isize + k as isize);
            }
            window.sort_unstable_by(f32::total_cmp);
            window[pad]
        })
        .collect()
}

/// The cheapest monotonic path from (0, 0) to (rows-1, cols-1) through `cost` (row-major),
/// moving one row, one column or both per step. Returns the path's (row, column) pairs.
pub(crate) fn dtw(cost: &[f32], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    if rows == 0 || cols == 0 || cost.len() < rows * cols {
        return Vec::new();
    }
    // acc[(i+1)*(cols+1) + (j+1)]: best cost of a path ending at (i, j); step: 0 diagonal,
    // 1 from the row above, 2 from the column before.
    let width = cols + 1;
    let mut acc = vec![f32::INFINITY; (rows + 1) * width];
    let mut step = vec![0u8; (rows + 1) * width];
    acc[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let diag = acc[(i - 1) * width + j - 1];
            let up = acc[(i - 1) * width + j];
            let left = acc[i * width + j - 1];
            let (best, from) = if diag < up && diag < left {
                (diag, 0)
            } else if up < diag && up < left {
                (up, 1)
            } else {
                (left, 2)
            };
            acc[i * width + j] = cost[(i - 1) * cols + j - 1] + best;
            step[i * width + j] = from;
        }
    }
    // The borders are infinite, so the walk back always ends through (1, 1) at the origin.
    let (mut i, mut j) = (rows, cols);
    let mut path = Vec::with_capacity(rows + cols);
    while i > 0 && j > 0 {
        path.push((i - 1, j - 1));
        match step[i * width + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path
}

/// Each row's start time in seconds: the frame where the path first enters the row.
pub(crate) fn row_starts(path: &[(usize, usize)], rows: usize) -> Vec<f32> {
    let mut starts = vec![None; rows];
    for &(r, f) in path {
        if let Some(slot @ None) = starts.get_mut(r) {
            *slot = Some(f as f32 / FRAMES_PER_SECOND);
        }
    }
    // A row the path skipped (it cannot, but stay total) takes the previous row's time.
    let mut last = 0.0;
    starts
        .into_iter()
        .map(|s| {
            last = s.unwrap_or(last);
            last
        })
        .collect()
}

/// Which 20 ms frames (the alignment's frames) of `audio` (16 kHz) hold sound: RMS above 1%
/// (−40 dB) of the loudest frame's, and above −80 dBFS.
pub(crate) fn sounding_frames(audio: &[f32]) -> Vec<bool> {
    let hop = (16_000.0 / FRAMES_PER_SECOND) as usize;
    let rms: Vec<f32> = audio
        .chunks(hop)
        .map(|c| (c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32).sqrt())
        .collect();
    let peak = rms.iter().copied().fold(0f32, f32::max);
    let threshold = (peak * 0.01).max(1e-4);
    rms.into_iter().map(|r| r > threshold).collect()
}

/// Silent frames that separate two sounds (160 ms: longer than a stop consonant's closure).
const PAUSE_FRAMES: usize = 8;

/// Pulls a word's `(start, end)` (seconds) in to its sound. The alignment leaves a pause inside
/// a word, before or after it, and often the tail of the previous word or the onset of the next
/// one; so the word becomes the longest stretch of sound in its span (stretches split by pauses
/// of [`PAUSE_FRAMES`]). A span without sound is left as it is.
pub(crate) fn trim_to_sound(start: f32, end: f32, sounding: &[bool]) -> (f32, f32) {
    let f0 = ((start * FRAMES_PER_SECOND).round() as usize).min(sounding.len());
    let f1 = ((end * FRAMES_PER_SECOND).round() as usize).clamp(f0, sounding.len());
    // (first, last) sounding frame of each stretch.
    let mut stretches: Vec<(usize, usize)> = Vec::new();
    for (f, _) in sounding
        .iter()
        .enumerate()
        .take(f1)
        .skip(f0)
        .filter(|(_, &s)| s)
    {
        match stretches.last_mut() {
            Some((_, last)) if f - *last <= PAUSE_FRAMES => *last = f,
            _ => stretches.push((f, f)),
        }
    }
    match stretches
        .into_iter()
        .max_by_key(|&(a, b)| (b - a, usize::MAX - a))
    {
        Some((first, last)) => (
            first as f32 / FRAMES_PER_SECOND,
            (last + 1) as f32 / FRAMES_PER_SECOND,
        ),
        None => (start, end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_filter_mirrors_the_ends() {
        let x = [5.0, 1.0, 2.0, 9.0, 3.0];
        // Padded: 2 1 | 5 1 2 9 3 | 9 2 with width 5.
        assert_eq!(median_filter(&x, 5), vec![2.0, 2.0, 3.0, 3.0, 3.0]);
        assert_eq!(median_filter(&[1.0], 7), vec![1.0]);
    }

    #[test]
    fn dtw_follows_the_cheap_diagonal_band() {
        // 3 tokens over 6 frames; token k is cheap on frames 2k and 2k+1.
        let mut cost = vec![1.0f32; 18];
        for k in 0..3 {
            cost[k * 6 + 2 * k] = -1.0;
            cost[k * 6 + 2 * k + 1] = -1.0;
        }
        let path = dtw(&cost, 3, 6);
        assert_eq!(path.first(), Some(&(0, 0)));
        assert_eq!(path.last(), Some(&(2, 5)));
        assert_eq!(row_starts(&path, 3), vec![0.0, 0.04, 0.08]);
    }

    #[test]
    fn words_are_trimmed_to_their_sound() {
        // 1 s: silence, then sound from 0.3 s to 0.7 s.
        let audio: Vec<f32> = (0..16_000)
            .map(|i| {
                if (4_800..11_200).contains(&i) {
                    0.5
                } else {
                    0.0
                }
            })
            .collect();
        let sounding = sounding_frames(&audio);
        assert_eq!(sounding.len(), 50);
        assert_eq!(trim_to_sound(0.1, 0.9, &sounding), (0.3, 0.7));
        assert_eq!(trim_to_sound(0.0, 0.2, &sounding), (0.0, 0.2));
        // The previous word's tail (0.0–0.1 s) before a pause is not this word.
        let mut audio = audio;
        audio[..1_600].fill(0.5);
        assert_eq!(
            trim_to_sound(0.0, 0.9, &sounding_frames(&audio)),
            (0.3, 0.7)
        );
    }
}
