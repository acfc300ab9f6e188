"""How the browser tests start Debian's Chromium: headless, offline, nothing phoning home."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"  # screenshots, kept for a person to look at (gitignored)
CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download fails here
# Without the background-networking flags Chromium keeps trying hosts this machine
# cannot reach; the tests assert that the page itself contacts only this machine.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
