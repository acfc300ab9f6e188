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

# What a person without Chromium runs; `make test` runs it for root (.ci/install-browser).
INSTALL_COMMAND = "sudo apt-get install -y chromium fonts-dejavu-core"


def chromium_missing(path: str = CHROMIUM) -> str:
    """One line saying how to install the browser when ``path`` is absent; "" when present.

    The browser tests fail with this line rather than Playwright's bare "executable
    doesn't exist", and never skip: a missing browser is a set-up step left undone.
    """
    if Path(path).is_file():
        return ""
    return (
        f"the browser tests need Chromium at {path}: run `{INSTALL_COMMAND}` "
        "(`make test` installs it when run as root), then run the tests again"
    )
