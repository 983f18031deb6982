use kiln_engine_whisper::ct2::Ct2Model;

#[test]
fn reads_tiny_en_container_and_maps_names() {
    let installed = kiln_store::ensure_for_tests("whisper-tiny-en");
    let model = Ct2Model::read(&installed.dir.join("model.bin")).expect("read model.bin");
    assert_eq!(model.spec, "WhisperSpec");
    let emb = model
        .get("decoder/projection/weight")
        .expect("alias resolves");
    assert_eq!(emb.dims, vec![51864, 384]);

    let cfg = model.whisper_config(vec![]).expect("config");
    assert_eq!(cfg.d_model, 384);
    assert_eq!(cfg.encoder_layers, 4);
    assert_eq!(cfg.decoder_layers, 4);
    assert_eq!(cfg.encoder_attention_heads, 6);
    assert_eq!(cfg.num_mel_bins, 80);
    assert_eq!(cfg.max_source_positions, 1500);
    assert_eq!(cfg.max_target_positions, 448);
    assert_eq!(cfg.vocab_size, 51864);

    let t = model.to_hf_tensors(&cfg).expect("mapping");
    let shape = |n: &str| {
        t.get(n)
            .unwrap_or_else(|| panic!("missing {n}"))
            .dims()
            .to_vec()
    };
    assert_eq!(shape("model.encoder.conv1.weight"), vec![384, 80, 3]);
    assert_eq!(
        shape("model.encoder.layers.3.self_attn.q_proj.weight"),
        vec![384, 384]
    );
    assert_eq!(
        shape("model.encoder.layers.3.self_attn.v_proj.bias"),
        vec![384]
    );
    assert_eq!(
        shape("model.decoder.layers.0.encoder_attn.k_proj.weight"),
        vec![384, 384]
    );
    assert_eq!(shape("model.decoder.layers.0.fc1.weight"), vec![1536, 384]);
    assert_eq!(
        shape("model.decoder.embed_positions.weight"),
        vec![448, 384]
    );
    assert!(!t.contains_key("model.decoder.layers.0.self_attn.k_proj.bias"));

    // The split really takes the middle third: the fused key bias CTranslate2 stores is zero.
    let fused = model
        .get("encoder/layer_0/self_attention/linear_0/bias")
        .expect("fused bias");
    let k_bias = &fused.data[384 * 2..384 * 4];
    assert!(
        k_bias.iter().all(|&b| b == 0 || b == 0x80),
        "key bias not zero"
    );
}

#[test]
fn rejects_truncated_container() {
    let installed = kiln_store::ensure_for_tests("whisper-tiny-en");
    let bytes = std::fs::read(installed.dir.join("model.bin")).expect("read");
    assert!(Ct2Model::parse(&bytes[..100_000]).is_err());
    assert!(Ct2Model::parse(b"nonsense").is_err());
}
