#pragma once

#define POSENC_VERSION_MAJOR 0
#define POSENC_VERSION_MINOR 1
#define POSENC_VERSION_PATCH 0

namespace posenc {
inline constexpr int kVersionMajor = POSENC_VERSION_MAJOR;
inline constexpr int kVersionMinor = POSENC_VERSION_MINOR;
inline constexpr int kVersionPatch = POSENC_VERSION_PATCH;
}  // namespace posenc
