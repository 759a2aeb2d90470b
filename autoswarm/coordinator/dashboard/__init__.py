"""The web dashboard's static files (HTML, JavaScript, CSS), served by the coordinator.

Hand-written, no build step and no CDN: it works offline, as shipped in the package."""
