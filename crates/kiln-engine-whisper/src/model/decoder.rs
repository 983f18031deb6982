//! The text decoder on plain slices: a self-attention KV cache that grows by one row per
//! token, cross-attention keys and values computed once per 30 s window, projections through
//! [`StepLinear`] (int8 where the CPU has VNNI).

use candle_core::{Device, Result, Tensor};
use candle_transformers::models::whisper::Config;
use kiln_kernels as kernels;
use rayon::prelude::*;

use super::step::{StepLinear, Table};
use super::{Norm, Projection, Weights};
use crate::AsrError;

/// Query rows from which a pass splits its attention across threads (the prompt and the
/// alignment pass; a step's one to ten rows stay on the calling thread).
const PARALLEL_ROWS: usize = 8;

struct Block {
    attn_ln: Norm,
    /// query (pre-scaled), key and value of the self-attention: d → 3d.
    qkv: StepLinear,
    out: StepLinear,
    cross_ln: Norm,
    /// query of the cross-attention (pre-scaled).
    cross_q: StepLinear,
    /// key and value of the cross-attention, applied to the audio features: d → 2d.
    cross_kv: Projection,
    cross_out: StepLinear,
    mlp_ln: Norm,
    fc1: StepLinear,
    fc2: StepLinear,
}

/// One layer's self-attention keys and values, (tokens, d) each, token-major.
#[derive(Clone, Default)]
struct Cache {
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// One layer's cross-attention keys, transposed per head (H, dh, frames), and values per head
/// (H, frames, dh): the layouts a single query reads in order.
#[derive(Default)]
struct CrossKv {
    keys_t: Vec<f32>,
    values: Vec<f32>,
    frames: usize,
}

pub(crate) struct Decoder {
    /// Token embeddings (vocabulary, d); also the output projection.
    embedding: Table,
    d_model: usize,
    /// (n_ctx, d).
    positions: Vec<f32>,
    blocks: Vec<Block>,
    ln: Norm,
    heads: usize,
    n_ctx: usize,
    caches: Vec<Cache>,
    cross: Vec<CrossKv>,
    /// Tokens in `caches`.
    len: usize,
}

/// What one [`Decoder::forward`] call returns.
pub(crate) struct DecoderOutput {
    /// Final hidden states (after the last LayerNorm) of the new tokens: (n, d).
    pub hidden: Tensor,
    /// For each requested `(layer, head)`, the cross-attention scores (before softmax) of the
    /// new tokens over the audio frames: (n, frames).
    pub cross_scores: Vec<Tensor>,
}

/// Several continuations of the cached prompt decoded side by side (beam search, sampling):
/// each row's own self-attention caches, one per layer.
pub(crate) struct Rows {
    caches: Vec<Vec<Cache>>,
    len: usize,
}

impl Rows {
    pub fn count(&self) -> usize {
        self.caches.len()
    }

    /// Keeps the rows `from` names, in that order (a row may be repeated). A row's last use
    /// moves its caches rather than copying them.
    pub fn select(&mut self, from: &[u32]) -> Result<()> {
        let count = self.caches.len();
        if let Some(bad) = from.iter().find(|&&r| r as usize >= count) {
            candle_core::bail!("row {bad} of {count}");
        }
        let mut uses = vec![0usize; count];
        for &r in from {
            uses[r as usize] += 1;
        }
        let mut old: Vec<Option<Vec<Cache>>> = self.caches.drain(..).map(Some).collect();
        for &r in from {
            let r = r as usize;
            uses[r] -= 1;
            let caches = if uses[r] == 0 {
                old[r].take()
            } else {
                old[r].clone()
            };
            match caches {
                Some(caches) => self.caches.push(caches),
                None => candle_core::bail!("row {r} was moved twice"),
            }
        }
        Ok(())
    }
}

/// Scratch buffers of one pass of `n` rows.
struct Pass {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    query: Vec<f32>,
    attended: Vec<f32>,
    hidden: Vec<f32>,
}

impl Pass {
    fn new(n: usize, d: usize) -> Self {
        Self {
            normed: vec![0f32; n * d],
            qkv: vec![0f32; n * 3 * d],
            query: vec![0f32; n * d],
            attended: vec![0f32; n * d],
            hidden: Vec::new(),
        }
    }
}

impl Decoder {
    pub fn load(w: &mut Weights, cfg: &Config) -> std::result::Result<Self, AsrError> {
        let heads = cfg.decoder_attention_heads;
        let scale = ((cfg.d_model / heads) as f64).powf(-0.5);
        let blocks = (0..cfg.decoder_layers)
            .map(|i| {
                let p = format!("model.decoder.layers.{i}");
                let a = format!("{p}.self_attn");
                let c = format!("{p}.encoder_attn");
                Ok(Block {
                    attn_ln: Norm::load(w, &format!("{p}.self_attn_layer_norm"))?,
                    qkv: StepLinear::fused(
                        w,
                        &[
                            format!("{a}.q_proj"),
                            format!("{a}.k_proj"),
                            format!("{a}.v_proj"),
                        ],
                        &[scale],
                    )?,
                    out: StepLinear::load(w, &format!("{a}.out_proj"))?,
                    cross_ln: Norm::load(w, &format!("{p}.encoder_attn_layer_norm"))?,
                    cross_q: StepLinear::fused(w, &[format!("{c}.q_proj")], &[scale])?,
                    cross_kv: Projection::load(
                        w,
                        &[format!("{c}.k_proj"), format!("{c}.v_proj")],
                        &[],
                    )?,
                    cross_out: StepLinear::load(w, &format!("{c}.out_proj"))?,
                    mlp_ln: Norm::load(w, &format!("{p}.final_layer_norm"))?,
                    fc1: StepLinear::load(w, &format!("{p}.fc1"))?,
                    fc2: StepLinear::load(w, &format!("{p}.fc2"))?,
                })
            })
            .collect::<std::result::Result<Vec<_>, AsrError>>()?;
        let positions = w.take("model.decoder.embed_positions.weight")?;
        let (n_ctx, width) = positions.dims2()?;
        if width != cfg.d_model {
            return Err(AsrError::Model(format!(
                "decoder positions are {width} wide, not {}",
                cfg.d_model
            )));
        }
        let layers = blocks.len();
        Ok(Self {
            embedding: Table::new(w, "model.decoder.embed_tokens.weight")?,
            d_model: cfg.d_model,
            positions: positions.flatten_all()?.to_vec1()?,
            blocks,
            ln: Norm::load(w, "model.decoder.layer_norm")?,
            heads,
            n_ctx: n_ctx.min(cfg.max_target_positions),
            caches: vec![Cache::default(); layers],
            cross: (0..layers).map(|_| CrossKv::default()).collect(),
            len: 0,
        })
    }

    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Starts a window: computes every layer's cross-attention keys and values from the audio
    /// features (frames, d) and empties the self-attention cache.
    pub fn set_audio(&mut self, features: &Tensor) -> Result<()> {
        let (frames, d) = features.dims2()?;
        if d != self.d_model {
            candle_core::bail!("audio features are {d} wide, not {}", self.d_model);
        }
        let features: Vec<f32> = features.flatten_all()?.to_vec1()?;
        let dh = d / self.heads;
        let mut kv = vec![0f32; frames * 2 * d];
        for (block, cross) in self.blocks.iter().zip(&mut self.cross) {
            block.cross_kv.forward_into(&features, &mut kv, false);
            cross.frames = frames;
            cross.keys_t.resize(frames * d, 0.0);
            cross.values.resize(frames * d, 0.0);
            cross
                .keys_t
                .par_chunks_mut(dh * frames)
                .zip(cross.values.par_chunks_mut(frames * dh))
                .enumerate()
                .for_each(|(h, (keys_t, values))| {
                    for (t, row) in kv.chunks_exact(2 * d).enumerate() {
                        let key = &row[h * dh..(h + 1) * dh];
                        for (e, &k) in key.iter().enumerate() {
                            keys_t[e * frames + t] = k;
                        }
                        values[t * dh..(t + 1) * dh]
                            .copy_from_slice(&row[d + h * dh..d + (h + 1) * dh]);
                    }
                });
        }
        self.reset();
        Ok(())
    }

    /// Empties the self-attention cache (the audio stays).
    pub fn reset(&mut self) {
        for cache in &mut self.caches {
            cache.keys.clear();
            cache.values.clear();
        }
        self.len = 0;
    }

    /// Embeddings plus positions of `tokens`, each at its position in `positions`.
    fn embed(&self, tokens: &[u32], positions: impl Iterator<Item = usize>) -> Result<Vec<f32>> {
        let d = self.d_model;
        let mut x = Vec::with_capacity(tokens.len() * d);
        for (&t, p) in tokens.iter().zip(positions) {
            let start = x.len();
            self.embedding.push_row(t as usize, &mut x)?;
            let position = &self.positions[p * d..(p + 1) * d];
            x[start..]
                .iter_mut()
                .zip(position)
                .for_each(|(v, p)| *v += p);
        }
        Ok(x)
    }

    /// Runs `tokens` after those already cached and caches them. `alignment_heads` are the
    /// `(layer, head)` pairs whose cross-attention scores to return.
    pub fn forward(
        &mut self,
        tokens: &[u32],
        alignment_heads: &[(usize, usize)],
    ) -> Result<DecoderOutput> {
        let offset = self.len;
        let n = tokens.len();
        if n == 0 || offset + n > self.n_ctx {
            candle_core::bail!(
                "{n} tokens after {offset} exceed the decoder's {} positions",
                self.n_ctx
            );
        }
        let (d, heads) = (self.d_model, self.heads);
        let mut x = self.embed(tokens, offset..offset + n)?;
        let mut pass = Pass::new(n, d);
        let mut cross_scores = Vec::new();
        for (layer, block) in self.blocks.iter().enumerate() {
            pass.normed.copy_from_slice(&x);
            block.attn_ln.apply(&mut pass.normed);
            block
                .qkv
                .forward_into(&pass.normed, n, &mut pass.qkv, false);
            let cache = &mut self.caches[layer];
            for row in pass.qkv.chunks_exact(3 * d) {
                cache.keys.extend_from_slice(&row[d..2 * d]);
                cache.values.extend_from_slice(&row[2 * d..]);
            }
            // Row i sees the cached tokens and itself: offset + i + 1 keys.
            let cache = &self.caches[layer];
            for_each_row(&mut pass.attended, d, n, |i, out| {
                let query = &pass.qkv[i * 3 * d..i * 3 * d + d];
                let mut scores = vec![0f32; offset + i + 1];
                self_attention(query, cache, heads, &mut scores, out);
            });
            let wanted: Vec<usize> = alignment_heads
                .iter()
                .filter(|(l, _)| *l == layer)
                .map(|(_, h)| *h)
                .collect();
            cross_scores.extend(self.finish_layer(layer, &mut x, n, &mut pass, &wanted)?);
        }
        self.len += n;
        self.ln.apply(&mut x);
        Ok(DecoderOutput {
            hidden: Tensor::from_vec(x, (n, d), &Device::Cpu)?,
            cross_scores,
        })
    }

    /// The rest of a layer once its self-attention is in `pass.attended`: the output
    /// projection, the cross-attention over the audio and the feed-forward, all added to `x`.
    /// Returns the pre-softmax cross-attention scores of the `wanted` heads.
    fn finish_layer(
        &self,
        layer: usize,
        x: &mut [f32],
        n: usize,
        pass: &mut Pass,
        wanted: &[usize],
    ) -> Result<Vec<Tensor>> {
        let block = &self.blocks[layer];
        block.out.forward_into(&pass.attended, n, x, true);

        pass.normed.copy_from_slice(x);
        block.cross_ln.apply(&mut pass.normed);
        block
            .cross_q
            .forward_into(&pass.normed, n, &mut pass.query, false);
        let kept = cross_attention(
            &self.cross[layer],
            &pass.query,
            n,
            self.heads,
            wanted,
            &mut pass.attended,
        )?;
        block.cross_out.forward_into(&pass.attended, n, x, true);

        self.feed_forward(block, x, n, pass);
        Ok(kept)
    }

    fn feed_forward(&self, block: &Block, x: &mut [f32], n: usize, pass: &mut Pass) {
        pass.normed.copy_from_slice(x);
        block.mlp_ln.apply(&mut pass.normed);
        pass.hidden.resize(n * block.fc1.out_features(), 0.0);
        block
            .fc1
            .forward_into(&pass.normed, n, &mut pass.hidden, false);
        kernels::gelu_erf_in_place(&mut pass.hidden);
        block.fc2.forward_into(&pass.hidden, n, x, true);
    }

    /// `n` rows that each continue the tokens now cached.
    pub fn fork(&self, n: usize) -> Result<Rows> {
        if self.len == 0 {
            candle_core::bail!("fork before the prompt was decoded");
        }
        Ok(Rows {
            caches: vec![self.caches.clone(); n],
            len: self.len,
        })
    }

    /// One step of every row: `tokens[i]` follows row `i`. Returns the final hidden states
    /// (rows, d). The weights are read once for all rows.
    pub fn forward_rows(&self, rows: &mut Rows, tokens: &[u32]) -> Result<Tensor> {
        let n = tokens.len();
        let offset = rows.len;
        if n != rows.count() || offset + 1 > self.n_ctx {
            candle_core::bail!("{n} rows at {offset} do not fit the decoder's rows or positions");
        }
        let (d, heads) = (self.d_model, self.heads);
        let mut x = self.embed(tokens, std::iter::repeat(offset))?;
        let mut pass = Pass::new(n, d);
        for (layer, block) in self.blocks.iter().enumerate() {
            pass.normed.copy_from_slice(&x);
            block.attn_ln.apply(&mut pass.normed);
            block
                .qkv
                .forward_into(&pass.normed, n, &mut pass.qkv, false);
            let mut scores = vec![0f32; offset + 1];
            for (i, (row, caches)) in pass
                .qkv
                .chunks_exact(3 * d)
                .zip(&mut rows.caches)
                .enumerate()
            {
                let cache = &mut caches[layer];
                cache.keys.extend_from_slice(&row[d..2 * d]);
                cache.values.extend_from_slice(&row[2 * d..]);
                let out = &mut pass.attended[i * d..(i + 1) * d];
                self_attention(&row[..d], cache, heads, &mut scores, out);
            }
            self.finish_layer(layer, &mut x, n, &mut pass, &[])?;
        }
        rows.len += 1;
        self.ln.apply(&mut x);
        Tensor::from_vec(x, (n, d), &Device::Cpu)
    }

    /// Logits over the vocabulary for every row of `hidden` (rows, d).
    pub fn logits_rows(&self, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
        let (n, d) = hidden.dims2()?;
        let h: Vec<f32> = hidden.flatten_all()?.to_vec1()?;
        let flat = self.embedding.logits(&h, n);
        let vocab = flat.len() / n.max(1);
        if vocab == 0 || d == 0 {
            candle_core::bail!("no logits for {n} rows");
        }
        Ok(flat.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Logits over the vocabulary for one row of [`DecoderOutput::hidden`].
    pub fn logits(&self, hidden: &Tensor, row: usize) -> Result<Vec<f32>> {
        let h: Vec<f32> = hidden.narrow(0, row, 1)?.flatten_all()?.to_vec1()?;
        Ok(self.embedding.logits(&h, 1))
    }
}

/// Calls `f(i, row)` for each of the `n` rows (`width` wide) of `out`, across threads when
/// there are enough of them.
fn for_each_row(out: &mut [f32], width: usize, n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if n >= PARALLEL_ROWS {
        out.par_chunks_mut(width)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    } else {
        out.chunks_mut(width)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    }
}

/// One query row (pre-scaled, d wide) over the first `scores.len()` tokens of a layer's cache,
/// every head, into `out` (d).
fn self_attention(query: &[f32], cache: &Cache, heads: usize, scores: &mut [f32], out: &mut [f32]) {
    let d = query.len();
    let dh = d / heads;
    for h in 0..heads {
        let head = h * dh..(h + 1) * dh;
        kernels::dot_rows(&query[head.clone()], &cache.keys[h * dh..], d, scores);
        kernels::softmax(scores);
        kernels::weighted_rows(scores, &cache.values[h * dh..], d, &mut out[head]);
    }
}

/// Every query row (pre-scaled, (n, d)) over the window's audio frames, into `out` (n, d).
/// Returns, for each head in `wanted`, the pre-softmax scores (n, frames).
fn cross_attention(
    cross: &CrossKv,
    queries: &[f32],
    n: usize,
    heads: usize,
    wanted: &[usize],
    out: &mut [f32],
) -> Result<Vec<Tensor>> {
    let frames = cross.frames;
    if frames == 0 {
        candle_core::bail!("the decoder ran before set_audio");
    }
    let d = queries.len() / n;
    let dh = d / heads;
    // Row i's kept scores: [i][wanted index][frame] (one unused value per row when none are
    // wanted, so that rows and their parts still pair up).
    let kept_width = (wanted.len() * frames).max(1);
    let mut kept = vec![0f32; n * kept_width];
    let attend_row = |i: usize, out: &mut [f32], kept: &mut [f32]| {
        let query = &queries[i * d..(i + 1) * d];
        let mut scores = vec![0f32; frames];
        for h in 0..heads {
            let head = h * dh..(h + 1) * dh;
            let keys_t = &cross.keys_t[h * dh * frames..(h + 1) * dh * frames];
            kernels::dot_transposed(&query[head.clone()], keys_t, frames, &mut scores);
            if let Some(w) = wanted.iter().position(|&wh| wh == h) {
                kept[w * frames..(w + 1) * frames].copy_from_slice(&scores);
            }
            kernels::softmax(&mut scores);
            let values = &cross.values[h * frames * dh..(h + 1) * frames * dh];
            kernels::weighted_rows(&scores, values, dh, &mut out[head]);
        }
    };
    if n >= PARALLEL_ROWS {
        out.par_chunks_mut(d)
            .zip(kept.par_chunks_mut(kept_width))
            .enumerate()
            .for_each(|(i, (out, kept))| attend_row(i, out, kept));
    } else {
        for (i, out) in out.chunks_mut(d).enumerate() {
            let kept = &mut kept[i * kept_width..(i + 1) * kept_width];
            attend_row(i, out, kept);
        }
    }
    (0..wanted.len())
        .map(|w| {
            let scores: Vec<f32> = (0..n)
                .flat_map(|i| {
                    let start = i * kept_width + w * frames;
                    kept[start..start + frames].iter().copied()
                })
                .collect();
            Tensor::from_vec(scores, (n, frames), &Device::Cpu)
        })
        .collect()
}
