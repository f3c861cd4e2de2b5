"""Downloads against a local HTTP server on 127.0.0.1: cache hits, resume, checksums."""

import hashlib
import http.server
import threading

import numpy as np
import pytest
from conftest import TINY, images, randomize

import vitbench
from vitbench.checkpoints import download, npz, registry
from vitbench.models.vit import create_model

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


class Server:
    """Serves `files` with Range support; `cut_after` bytes into a response it hangs up."""

    def __init__(self):
        self.files, self.requests, self.cut_after = {}, [], None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):  # as RFC 9110 answers: with the file's size
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if server.cut_after is not None:
                    chunk, server.cut_after = chunk[:server.cut_after], None
                self.wfile.write(chunk)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    s.files["/models/ViT-T.bin"] = PAYLOAD
    yield s
    s.close()


def test_download_lands_in_the_cache_keyed_by_url(server, isolated_cache):
    url = server.url + "/models/ViT-T.bin"
    path = download.fetch(url, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert path.is_relative_to(isolated_cache) and path.parts[-2:] == ("models", "ViT-T.bin")
    assert path.parent.parent.name == f"127.0.0.1_{server.httpd.server_address[1]}"


def test_a_leftover_partial_file_is_kept_when_whole_and_replaced_when_too_long(server):
    url = server.url + "/models/ViT-T.bin"
    target = download.cached_path(url)
    partial = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True)
    partial.write_bytes(PAYLOAD)  # whole: a process stopped before renaming it
    assert download.fetch(url, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [("/models/ViT-T.bin", f"bytes={len(PAYLOAD)}-")]
    target.unlink()
    partial.write_bytes(bytes(len(PAYLOAD) + 10))  # longer than the file: not a part of it
    assert download.fetch(url, progress=False).read_bytes() == PAYLOAD
    assert server.requests[1:] == [("/models/ViT-T.bin", f"bytes={len(PAYLOAD) + 10}-"),
                                   ("/models/ViT-T.bin", None)]
    assert not partial.exists()


def test_cache_hit_makes_no_request(server):
    url = server.url + "/models/ViT-T.bin"
    first = download.fetch(url, progress=False)
    second = download.fetch(url, progress=False)
    assert first == second and len(server.requests) == 1


def test_interrupted_download_is_not_cached_and_resumes(server):
    url = server.url + "/models/ViT-T.bin"
    server.cut_after = 300_000
    with pytest.raises(download.DownloadError, match="interrupted after 300000 of 1024000 bytes"):
        download.fetch(url, progress=False)
    target = download.cached_path(url)
    assert not target.exists()
    assert target.with_name(target.name + ".part").stat().st_size == 300_000
    path = download.fetch(url, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/models/ViT-T.bin", "bytes=300000-")
    assert not target.with_name(target.name + ".part").exists()


def test_bad_checksum_raises_and_keeps_nothing(server):
    url = server.url + "/models/ViT-T.bin"
    with pytest.raises(download.ChecksumError, match="expected 00ff"):
        download.fetch(url, sha256="00ff" * 16, progress=False)
    target = download.cached_path(url)
    assert not target.exists() and not target.with_name(target.name + ".part").exists()


def test_http_error_is_clear(server):
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        download.fetch(server.url + "/models/missing.npz", progress=False)


def test_unreachable_host_is_clear():
    with pytest.raises(download.DownloadError, match="cannot reach"):
        download.fetch("http://127.0.0.1:9/ViT.npz", progress=False)


def test_gs_paths_map_to_the_public_https_endpoint(isolated_cache):
    url = "gs://vit_models/imagenet21k+imagenet2012/ViT-B_16.npz"
    assert download.to_https(url) == \
        "https://storage.googleapis.com/vit_models/imagenet21k%2Bimagenet2012/ViT-B_16.npz"
    assert download.cached_path(url) == (isolated_cache / "storage.googleapis.com" / "vit_models"
                                         / "imagenet21k+imagenet2012" / "ViT-B_16.npz")


@pytest.mark.slow
def test_load_model_from_url_and_from_registry_name(server, tmp_path, monkeypatch):
    model = randomize(create_model(TINY, 10, 32))
    body = npz.save_npz(model, tmp_path / "tiny.npz").read_bytes()
    server.files["/vit_models/tiny.npz"] = body
    url = server.url + "/vit_models/tiny.npz"
    np.testing.assert_array_equal(vitbench.load_model(url, progress=False)(images()),
                                  model(images()))
    entry = registry.Checkpoint(name="vit_tiny.test", model="vit_tiny_test", upstream="none",
                                finetuned="", resolution=32, num_classes=10,
                                representation=False, url=url,
                                sha256=hashlib.sha256(body).hexdigest(), aliases=("tiny",))
    monkeypatch.setitem(registry.known_checkpoints(), entry.name, entry)
    monkeypatch.setitem(registry._by_alias(), "tiny", entry)
    np.testing.assert_array_equal(vitbench.load_model("tiny", progress=False)(images()),
                                  model(images()))
    assert len(server.requests) == 1  # the second load was a cache hit


def test_offline_mode_serves_the_cache_and_downloads_nothing(server, monkeypatch, capsys):
    from vitbench import cli

    server.files["/vit_models/a.npz"] = PAYLOAD
    url = server.url + "/vit_models/a.npz"
    monkeypatch.setenv("VITBENCH_OFFLINE", "1")
    with pytest.raises(download.DownloadError,
                       match="not in the cache and VITBENCH_OFFLINE is set") as error:
        download.fetch(url, progress=False)
    assert str(download.cached_path(url)) in str(error.value) and server.requests == []
    # fetched beforehand where there is network (`vitbench checkpoints --download`) ...
    monkeypatch.setenv("VITBENCH_OFFLINE", "0")
    assert cli.main(["checkpoints", f"--download={url}", "--model=vit_b16"]) == 0
    assert f"{url}: {download.cached_path(url)}" in capsys.readouterr().out
    # ... it is served from the cache offline
    monkeypatch.setenv("VITBENCH_OFFLINE", "1")
    assert download.fetch(url).read_bytes() == PAYLOAD and len(server.requests) == 1
    assert cli.main(["checkpoints", "--download=vit_b17"]) == 1
    assert "unknown checkpoint 'vit_b17'. Did you mean" in capsys.readouterr().err
