use super::*;

/// Hand-encodes pickles the way legacy `torch.save` (protocol 2) writes them, so the reader is
/// tested without Python or torch.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn start() -> Self {
        Pickle(vec![0x80, 0x02])
    }
    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.op(b"c")
            .op(module.as_bytes())
            .op(b"\n")
            .op(name.as_bytes())
            .op(b"\n")
    }
    fn str(self, s: &str) -> Self {
        let len = (s.len() as u32).to_le_bytes();
        self.op(b"X").op(&len).op(s.as_bytes())
    }
    fn int(self, v: u8) -> Self {
        self.op(&[b'K', v])
    }
    fn ints(self, vs: &[u8]) -> Self {
        vs.iter().fold(self.op(b"("), |p, &v| p.int(v)).op(b"t")
    }
    /// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride,
    /// False, OrderedDict())`
    fn tensor(self, key: &str, numel: u8, offset: u8, size: &[u8], stride: &[u8]) -> Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"(")
            .op(b"(")
            .str("storage")
            .global("torch", "FloatStorage")
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"N")
            .op(b"tQ")
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(&[0x89])
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
    fn stop(self) -> Vec<u8> {
        self.op(b".").0
    }
}

fn legacy_file(state_dict: Vec<u8>, storages: &[(&str, Vec<f32>)]) -> Vec<u8> {
    let mut out = MAGIC_PICKLE.to_vec();
    out.extend(Pickle::start().op(b"M").op(&1001u16.to_le_bytes()).stop());
    out.extend(
        Pickle::start()
            .op(b"}(")
            .str("protocol_version")
            .op(b"M")
            .op(&1001u16.to_le_bytes())
            .str("little_endian")
            .op(&[0x88])
            .op(b"u")
            .stop(),
    );
    out.extend(state_dict);
    let keys = storages
        .iter()
        .fold(Pickle::start().op(b"]("), |p, (k, _)| p.str(k))
        .op(b"e")
        .stop();
    out.extend(keys);
    for (_, data) in storages {
        out.extend((data.len() as u64).to_le_bytes());
        for v in data {
            out.extend(v.to_le_bytes());
        }
    }
    out
}

fn sample_file() -> Vec<u8> {
    let state_dict = Pickle::start()
        .global("collections", "OrderedDict")
        .op(b")R(")
        // Column-major 2×3: a[i][j] = s0[i + 2j].
        .str("a")
        .tensor("s0", 6, 0, &[2, 3], &[1, 2])
        // A strided view into the same storage: s0[1], s0[3].
        .str("b")
        .tensor("s0", 6, 1, &[2], &[2])
        // Channels-last N=1,C=2,H=2,W=2: c[0][c][h][w] = s1[c + 4h + 2w].
        .str("c")
        .tensor("s1", 8, 0, &[1, 2, 2, 2], &[8, 1, 4, 2])
        // A scalar, as `num_batches_tracked` is stored.
        .str("d")
        .tensor("s2", 1, 0, &[], &[])
        .op(b"u")
        .stop();
    let s0: Vec<f32> = (0..6).map(|v| v as f32).collect();
    let s1: Vec<f32> = (0..8).map(|v| v as f32 * 10.0).collect();
    legacy_file(state_dict, &[("s0", s0), ("s1", s1), ("s2", vec![7.0])])
}

#[test]
fn reads_hand_encoded_legacy_file() {
    let bytes = sample_file();
    let tensors = read_legacy_pth_from(&mut bytes.as_slice()).expect("read");
    assert_eq!(tensors.len(), 4);
    let a = tensors["a"].to_vec2::<f32>().expect("a");
    assert_eq!(a, vec![vec![0.0, 2.0, 4.0], vec![1.0, 3.0, 5.0]]);
    let b = tensors["b"].to_vec1::<f32>().expect("b");
    assert_eq!(b, vec![1.0, 3.0]);
    let c = tensors["c"]
        .squeeze(0)
        .expect("c")
        .to_vec3::<f32>()
        .expect("c");
    // c[ch][h][w] = 10 * (ch + 4h + 2w)
    assert_eq!(
        c,
        vec![
            vec![vec![0.0, 20.0], vec![40.0, 60.0]],
            vec![vec![10.0, 30.0], vec![50.0, 70.0]],
        ]
    );
    assert!(tensors["c"].is_contiguous());
    assert_eq!(tensors["d"].to_scalar::<f32>().expect("d"), 7.0);
}

#[test]
fn rejects_bad_magic_and_truncation() {
    let mut bytes = sample_file();
    assert!(read_legacy_pth_from(&mut &bytes[..bytes.len() - 3]).is_err());
    bytes[5] ^= 0xff;
    let err = read_legacy_pth_from(&mut bytes.as_slice()).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    assert!(read_legacy_pth_from(&mut &b""[..]).is_err());
}

#[test]
fn rejects_views_past_their_storage() {
    let state_dict = Pickle::start()
        .global("collections", "OrderedDict")
        .op(b")R(")
        .str("a")
        .tensor("s0", 4, 2, &[4], &[1])
        .op(b"u")
        .stop();
    let bytes = legacy_file(state_dict, &[("s0", vec![0.0; 4])]);
    let err = read_legacy_pth_from(&mut bytes.as_slice()).unwrap_err();
    assert!(err.to_string().contains("past its storage"), "{err}");
}

#[test]
fn reads_the_real_efficientnet_checkpoint() {
    let model = kiln_store::ensure_for_tests("efficientnet-lite0");
    let path = model.dir.join("efficientnet-lite0-57934424.pth");
    let tensors = read_legacy_pth(&path).expect("read checkpoint");
    assert_eq!(tensors.len(), 296);
    assert_eq!(tensors["_conv_stem.weight"].dims(), &[32, 3, 3, 3]);
    assert_eq!(
        tensors["_blocks.3._depthwise_conv.weight"].dims(),
        &[144, 1, 5, 5]
    );
    assert_eq!(tensors["_fc.weight"].dims(), &[1000, 1280]);
    assert_eq!(tensors["_bn0.num_batches_tracked"].dtype(), DType::I64);
    assert!(tensors["_conv_stem.weight"].is_contiguous());
}
