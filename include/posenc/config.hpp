#pragma once
// Portable spellings of compiler hints used by the kernels.

#if defined(__GNUC__) || defined(__clang__)
#define POSENC_RESTRICT __restrict__
#define POSENC_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define POSENC_RESTRICT __restrict
#define POSENC_ALWAYS_INLINE __forceinline
#else
#define POSENC_RESTRICT
#define POSENC_ALWAYS_INLINE inline
#endif

#include <cstdint>

namespace posenc {
/// Sizes and indices (signed, like Eigen::Index).
using Index = std::ptrdiff_t;
/// Token positions: int64 so KV-cache offsets and long contexts never overflow.
using Position = std::int64_t;
/// Largest position accepted anywhere (FORMAT.md §4: positions lie in [0, 2^31 - 1]).
inline constexpr Position kMaxPosition = 2147483647;
/// Bytes per cache line on the x86-64 cores posenc targets: the unit of its memory requests.
inline constexpr Index kCacheLineBytes = 64;
}  // namespace posenc
