"""A self-signed certificate for the HTTPS listener (kubectl sends tokens only over HTTPS)."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess


def make_certificate(folder: str, host: str) -> tuple[ssl.SSLContext, bytes] | None:
    """A server SSL context and the PEM certificate clients should trust; None without the
    `openssl` command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key")
    san = f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "30", "-subj", "/CN=kubesim", "-keyout", key, "-out", cert,
         "-addext", f"subjectAltName={san},DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with open(cert, "rb") as f:
        return context, f.read()
