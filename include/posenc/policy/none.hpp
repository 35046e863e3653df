#pragma once
// NoPosition: implements no hook; the baseline (e.g. for NoPE models, or to measure the cost of
// an encoding against attention alone).

#include "posenc/concepts.hpp"

namespace posenc {

struct NoPosition : EncodingBase {};

}  // namespace posenc
