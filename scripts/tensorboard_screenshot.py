"""Screenshot a real TensorBoard page (headless Chromium) for the docs.

    python scripts/tensorboard_screenshot.py LOGDIR docs/images/tensorboard_mi.png [--plugin custom_scalars]

docs/images/tensorboard_mi.png is the example's own run at its defaults, as a user sees it:

    python examples/tensorboard_mi.py --dataset digits --logdir /tmp/mi_demo
    python scripts/tensorboard_screenshot.py /tmp/mi_demo docs/images/tensorboard_mi.png

Starts ``tensorboard --logdir LOGDIR`` on a free localhost port, waits until it serves scalars, renders
``http://127.0.0.1:PORT/?darkMode=false#<plugin>`` in Debian's Chromium (``apt-get install chromium``)
with a virtual-time budget so the charts finish drawing, writes the PNG, and stops TensorBoard. The
default window (1600 x 1500) shows the first two categories of the MI layout (I(X;T) and I(T;Y) per
layer) and the run list, which is the charts' legend.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_scalars(port, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                if len(r.read()) > 2:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


def screenshot(logdir, out, plugin="custom_scalars", size=(1600, 1500), budget_ms=20000, query=""):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no Chromium found: apt-get install -y chromium")
    port = free_port()
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                           "--port", str(port), "--load_fast", "false"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for_scalars(port):
            raise SystemExit("TensorBoard did not serve scalars in time")
        url = f"http://127.0.0.1:{port}/?darkMode=false{query}#{plugin}"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                            f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url],
                           check=True, capture_output=True, timeout=180)
    finally:
        tb.terminate()
        tb.wait(timeout=30)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("out")
    parser.add_argument("--plugin", default="custom_scalars")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--query", default="", help="extra URL query, e.g. '&tagFilter=I_XT'")
    args = parser.parse_args()
    print(screenshot(args.logdir, args.out, args.plugin, (args.width, args.height), query=args.query))


if __name__ == "__main__":
    main()
