"""Ensemble's application core."""

import zoneinfo

# Time zone rules come from the pinned `tzdata` package, never from the host's
# /usr/share/zoneinfo: hosts lag behind IANA (Alberta's permanent UTC-6 from November 2026 is in
# tzdata 2026f, not in Debian's 2025b), and every process must compute the same local times.
zoneinfo.reset_tzpath(to=[])
