# workerd configuration for tests/workerd/main.rs (the same wiring as docs/worker-binding.md).
# The test copies this file next to worker.js and replaces KILN_ADDR with Kiln's host:port and
# VECTORIZE_INDEX with an index name of its own. `--socket-addr http=…` and
# `--external-addr kiln=…` set the ports at start-up.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    # Kiln, reached over plain HTTP. The binding sends `Host: workers-binding.ai`; the injected
    # x-forwarded-host tells Kiln its own address for `gateway(id).getUrl()`.
    (name = "kiln", external = (
      address = "KILN_ADDR",
      http = (injectRequestHeaders = [(name = "x-forwarded-host", value = "KILN_ADDR")]),
    )),
    # Kiln again, for env.VECTORIZE: the genuine binding sends `/<op>` and names no index, so
    # the index (of the binding account) is a header.
    (name = "kiln-vectorize", external = (
      address = "KILN_ADDR",
      http = (injectRequestHeaders = [(name = "x-kiln-vectorize-index", value = "VECTORIZE_INDEX")]),
    )),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8080", http = (), service = "main")],
);

const worker :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "worker.js")],
  compatibilityDate = "2026-11-01",
  bindings = [
    # The genuine Workers AI binding; its inner binding must be named `fetcher`.
    (name = "AI", wrapped = (
      moduleName = "cloudflare-internal:ai-api",
      innerBindings = [(name = "fetcher", service = "kiln")],
    )),
    # The genuine Vectorize binding (v2; indexId is only read by v1).
    (name = "VECTORIZE", wrapped = (
      moduleName = "cloudflare-internal:vectorize-api",
      innerBindings = [
        (name = "fetcher", service = "kiln-vectorize"),
        (name = "indexId", text = "VECTORIZE_INDEX"),
        (name = "indexVersion", text = "v2"),
      ],
    )),
  ],
);
