// T5 relative-position buckets and bias (FORMAT.md §4.6-4.7; HF T5Attention).

#include "test_util.hpp"

using namespace testutil;
using posenc::RelativeBucketConfig;
using posenc::RelativeBuckets;

namespace {

RelativeBuckets make_buckets(Index num_buckets, Position max_distance, bool bidirectional) {
  RelativeBucketConfig c;
  c.num_buckets = num_buckets;
  c.max_distance = max_distance;
  c.bidirectional = bidirectional;
  return RelativeBuckets(c);
}

/// HF `_relative_position_bucket`'s log line in double, truncated as `.to(torch.long)` does.
Index hf_double_bucket(Position rel, Index num_buckets, Position max_distance, bool bidirectional) {
  Index nb = num_buckets, ret = 0;
  Position n = 0;
  if (bidirectional) {
    nb /= 2;
    ret += rel > 0 ? nb : 0;
    n = std::llabs(rel);
  } else {
    n = -std::min<Position>(rel, 0);
  }
  const Index me = nb / 2;
  if (n < me) return ret + n;
  const double large =
      static_cast<double>(me) + std::log(static_cast<double>(n) / static_cast<double>(me)) /
                                    std::log(static_cast<double>(max_distance) / static_cast<double>(me)) *
                                    static_cast<double>(nb - me);
  return ret + std::min<Index>(static_cast<Index>(large), nb - 1);
}

}  // namespace

TEST_CASE("T5 buckets, default encoder config (32 buckets, max_distance 128): hand table", "[t5]") {
  const RelativeBuckets b = make_buckets(32, 128, true);
  // 16 buckets per direction, 8 exact; log bin k starts at n >= 8 * 16^(k/8) = 8 * 2^(k/2):
  // 11.3 -> 12, 16, 22.6 -> 23, 32, 45.3 -> 46, 64, 90.5 -> 91; bin 8 (n = 128) is capped at 7.
  // clang-format off
  const std::vector<std::pair<Position, Index>> keys_before = {
      {0, 0},   {1, 1},   {7, 7},   {8, 8},   {11, 8},  {12, 9},  {15, 9},  {16, 10},  {22, 10},  {23, 11},
      {31, 11}, {32, 12}, {45, 12}, {46, 13}, {63, 13}, {64, 14}, {90, 14}, {91, 15}, {127, 15}, {128, 15},
      {129, 15}, {5000, 15}, {posenc::kMaxPosition, 15}};
  // clang-format on
  for (const auto& [n, bucket] : keys_before) {
    INFO("rel = -" << n);
    CHECK(b.bucket(-n) == bucket);
    if (n > 0) {
      INFO("rel = +" << n);
      CHECK(b.bucket(n) == bucket + 16);
    }
  }
}

TEST_CASE("T5 buckets, default decoder config (unidirectional): hand table", "[t5]") {
  const RelativeBuckets b = make_buckets(32, 128, false);
  // 32 buckets, 16 exact; log bin k starts at n >= 16 * 8^(k/16): 18.2 -> 19, 20.7 -> 21, 23.6 -> 24,
  // 26.9 -> 27, ..., bin 8 at 45.3 -> 46, bin 14 at 98.7 -> 99, bin 15 at 112.4 -> 113.
  // clang-format off
  const std::vector<std::pair<Position, Index>> keys_before = {
      {0, 0},   {1, 1},   {15, 15}, {16, 16}, {18, 16}, {19, 17}, {20, 17}, {21, 18},  {23, 18},  {24, 19},
      {26, 19}, {27, 20}, {45, 23}, {46, 24}, {98, 29}, {99, 30}, {112, 30}, {113, 31}, {128, 31}, {100000, 31}};
  // clang-format on
  for (const auto& [n, bucket] : keys_before) {
    INFO("rel = -" << n);
    CHECK(b.bucket(-n) == bucket);
  }
  // Future keys share bucket 0.
  for (const Position rel : {Position{1}, Position{2}, Position{200}, posenc::kMaxPosition}) CHECK(b.bucket(rel) == 0);
}

TEST_CASE("T5 buckets at exact log boundaries use the exact floor (num_buckets 9, unidirectional, 128)", "[t5]") {
  // nb 9, me 4, e 5: bin = floor(log_32((n/4)^5)); (8/4)^5 = 32, (16/4)^5 = 32^2, (32/4)^5 = 32^3,
  // (64/4)^5 = 32^4: real values exactly 1, 2, 3, 4 (a double evaluation gives one less at 8, 16, 64).
  const RelativeBuckets b = make_buckets(9, 128, false);
  // clang-format off
  const std::vector<std::pair<Position, Index>> want = {{3, 3},  {4, 4},  {7, 4},  {8, 5},  {15, 5}, {16, 6},
                                                       {31, 6}, {32, 7}, {63, 7}, {64, 8}, {128, 8}, {1000, 8}};
  // clang-format on
  for (const auto& [n, bucket] : want) {
    INFO("rel = -" << n);
    CHECK(b.bucket(-n) == bucket);
  }
}

TEST_CASE("T5 buckets equal an exact integer evaluation of the floor over many configs", "[t5]") {
  std::vector<Index> bucket_counts;
  for (Index nb = 2; nb <= 40; ++nb) bucket_counts.push_back(nb);
  for (const Index nb : {Index{63}, Index{64}, Index{65}, Index{128}, Index{129}, Index{258}})
    bucket_counts.push_back(nb);
  int configs = 0;
  for (const bool bidirectional : {true, false}) {
    for (const Index nb : bucket_counts) {
      const Index me = (bidirectional ? nb / 2 : nb) / 2;
      if (me < 1) continue;
      for (const Position md :
           {me + 1, me + 2, 2 * me, 3 * me + 1, 4 * me, Position{128}, Position{256}, Position{777}, Position{2048}}) {
        if (md <= me) continue;
        ++configs;
        const RelativeBuckets lib = make_buckets(nb, md, bidirectional);
        const RefT5Buckets ref(nb, md, bidirectional);
        Index mismatches = 0;
        Position first_bad = 0;
        auto compare = [&](Position rel) {
          if (lib.bucket(rel) != ref.bucket(rel) && mismatches++ == 0) first_bad = rel;
        };
        for (Position rel = -(md + 2); rel <= md + 2; ++rel) compare(rel);
        for (const Position rel : {Position{5000}, -Position{5000}, posenc::kMaxPosition, -posenc::kMaxPosition}) {
          compare(rel);
        }
        INFO("num_buckets " << nb << ", max_distance " << md << ", bidirectional " << bidirectional
                            << ": first mismatch at rel " << first_bad << " (library " << lib.bucket(first_bad)
                            << ", exact " << ref.bucket(first_bad) << ")");
        CHECK(mismatches == 0);
      }
    }
  }
  CHECK(configs > 600);
}

TEST_CASE("T5 buckets are exact at every bin boundary when max_distance passes 2^31-1", "[t5]") {
  // The library keeps thresholds only up to kMaxPosition and decides larger distances directly.
  // Each bin's first distance is found by bisection on the exact reference (buckets grow with
  // the distance); the library must agree one below, at and one above it, on both sides.
  constexpr Position kLargest = std::numeric_limits<Position>::max();
  Index boundaries = 0;
  for (const Position md : {posenc::kMaxPosition - 3, posenc::kMaxPosition, posenc::kMaxPosition + 1, Position{1} << 32,
                            Position{1} << 40, Position{1000000000000}, Position{1} << 62, kLargest}) {
    for (const Index nb : {Index{4}, Index{9}, Index{16}, Index{32}}) {
      for (const bool bidirectional : {true, false}) {
        const RelativeBuckets lib = make_buckets(nb, md, bidirectional);
        const RefT5Buckets ref(nb, md, bidirectional);
        const Index per_direction = bidirectional ? nb / 2 : nb;
        const Position me = per_direction / 2;
        for (Index bin = me + 1; bin < per_direction; ++bin) {
          Position lo = me, hi = kLargest;  // ref.bucket(-lo) < bin <= ref.bucket(-hi)
          if (ref.bucket(-hi) < bin) break;
          while (hi - lo > 1) {
            const Position mid = lo + (hi - lo) / 2;
            (ref.bucket(-mid) >= bin ? hi : lo) = mid;
          }
          ++boundaries;
          for (const Position n : {hi - 1, hi, hi == kLargest ? hi : hi + 1}) {
            INFO("max_distance " << md << ", num_buckets " << nb << ", bidirectional " << bidirectional << ", n " << n);
            CHECK(lib.bucket(-n) == ref.bucket(-n));
            CHECK(lib.bucket(n) == ref.bucket(n));
          }
        }
        // -INT64_MIN does not exist: the distance saturates (no bin starts past INT64_MAX).
        CHECK(lib.bucket(std::numeric_limits<Position>::min()) == lib.bucket(-kLargest));
      }
    }
  }
  CHECK(boundaries > 300);
}

TEST_CASE("T5 buckets agree with HF's log line on the standard configs", "[t5]") {
  for (const auto& [nb, md] : {std::pair<Index, Position>{32, 128}, {64, 256}, {16, 64}, {32, 256}}) {
    for (const bool bidirectional : {true, false}) {
      const RelativeBuckets b = make_buckets(nb, md, bidirectional);
      Index mismatches = 0;
      for (Position rel = -3000; rel <= 3000; ++rel) {
        mismatches += b.bucket(rel) != hf_double_bucket(rel, nb, md, bidirectional) ? 1 : 0;
      }
      INFO("num_buckets " << nb << ", max_distance " << md << ", bidirectional " << bidirectional);
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("T5 bucket properties: range, bidirectional symmetry, monotone in |rel|, distance 0", "[t5]") {
  for (const bool bidirectional : {true, false}) {
    for (const auto& [nb, md] : {std::pair<Index, Position>{32, 128}, {9, 128}, {4, 5}, {2, 2}, {64, 1000}, {17, 40}}) {
      if (bidirectional && nb < 4) continue;
      INFO("num_buckets " << nb << ", max_distance " << md << ", bidirectional " << bidirectional);
      const RelativeBuckets b = make_buckets(nb, md, bidirectional);
      CHECK(b.bucket(0) == 0);  // no log(0), no UB (the sanitizer build checks)
      Index previous_before = 0, previous_after = 0;
      Index largest = 0;
      for (Position n = 0; n <= 3 * md + 5; ++n) {
        const Index before = b.bucket(-n);  // key before the query
        const Index after = b.bucket(n);    // key after the query
        REQUIRE(before >= 0);
        REQUIRE(before < nb);
        REQUIRE(after >= 0);
        REQUIRE(after < nb);
        REQUIRE(before >= previous_before);  // monotone in |rel|
        if (bidirectional) {
          if (n > 0) REQUIRE(after == before + nb / 2);  // bucket(+n) = bucket(-n) + num_buckets/2
          REQUIRE(after >= previous_after);
        } else {
          REQUIRE(after == 0);
        }
        previous_before = before;
        previous_after = after;
        largest = std::max(largest, std::max(before, after));
      }
      // Far distances reach the last bucket of their direction.
      CHECK(b.bucket(-posenc::kMaxPosition) == (bidirectional ? nb / 2 : nb) - 1);
      if (bidirectional) CHECK(b.bucket(posenc::kMaxPosition) == nb / 2 + nb / 2 - 1);
      CHECK(largest == (bidirectional ? 2 * (nb / 2) - 1 : nb - 1));
    }
  }
}

TEST_CASE("T5 buckets() uses rel = k - q", "[t5]") {
  const RelativeBuckets b = make_buckets(32, 128, true);
  const std::vector<Position> q = {0, 10, 200};
  const std::vector<Position> k = {0, 5, 10, 30, 500};
  const posenc::Tensor<Index, 2> got = b.buckets(q, k);
  REQUIRE(got.dimension(0) == 3);
  REQUIRE(got.dimension(1) == 5);
  CHECK(got(1, 1) == 5);        // k - q = -5: key before the query
  CHECK(got(1, 3) == 16 + 10);  // k - q = +20
  CHECK(got(0, 4) == 31);       // +500
  CHECK(got(2, 0) == 15);       // -200
  for (Index i = 0; i < 3; ++i) {
    for (Index j = 0; j < 5; ++j)
      CHECK(got(i, j) == b.bucket(k[static_cast<std::size_t>(j)] - q[static_cast<std::size_t>(i)]));
  }
}

TEST_CASE("RelativeBias looks up table[bucket(k - q), head]", "[t5]") {
  const Index nb = 12, heads = 3;
  FTensor<2> table(nb, heads);
  for (Index b = 0; b < nb; ++b) {
    for (Index h = 0; h < heads; ++h) table(b, h) = static_cast<float>(100 * h + b);
  }
  for (const bool bidirectional : {true, false}) {
    RelativeBucketConfig config;
    config.num_buckets = nb;
    config.max_distance = 20;
    config.bidirectional = bidirectional;
    const posenc::RelativeBias bias(config, table);
    CHECK(bias.num_heads() == heads);
    const RefT5Buckets ref(nb, 20, bidirectional);
    const std::vector<Position> q = {0, 3, 50, 7};
    const std::vector<Position> k = {0, 1, 2, 3, 4, 9, 15, 30, 60, 1000};
    const FTensor<3> got = bias.bias(q, k);
    REQUIRE(got.dimension(0) == heads);
    REQUIRE(got.dimension(1) == 4);
    REQUIRE(got.dimension(2) == 10);
    for (Index h = 0; h < heads; ++h) {
      for (Index i = 0; i < 4; ++i) {
        for (Index j = 0; j < 10; ++j) {
          const Index bucket = ref.bucket(k[static_cast<std::size_t>(j)] - q[static_cast<std::size_t>(i)]);
          CHECK(got(h, i, j) == static_cast<float>(100 * h + bucket));
        }
      }
    }
  }
}

TEST_CASE("RelativeBuckets and RelativeBias reject bad configs and tables", "[t5][errors]") {
  POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "num_buckets", make_buckets(0, 128, true));
  POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "num_buckets", make_buckets(3, 128, true));
  POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "num_buckets", make_buckets(1, 128, false));
  POSENC_REQUIRE_THROWS_NAMING(posenc::InvalidParameter, "max_distance", make_buckets(32, 8, true));
  POSENC_REQUIRE_THROWS_NAMING(std::invalid_argument, "max_distance", make_buckets(32, 16, false));
  CHECK_NOTHROW(make_buckets(32, 9, true));

  RelativeBucketConfig config;  // 32 buckets
  POSENC_REQUIRE_THROWS_NAMING(posenc::ShapeMismatch, "table",
                               posenc::RelativeBias(config, posenc::TensorRef<const float, 2>{}));
  FTensor<2> wrong_rows(31, 4);
  wrong_rows.setZero();
  POSENC_REQUIRE_THROWS_NAMING(posenc::ShapeMismatch, "table", posenc::RelativeBias(config, wrong_rows));
  FTensor<2> right(32, 4);
  right.setZero();
  const posenc::RelativeBias bias(config, right);
  POSENC_REQUIRE_THROWS_NAMING(posenc::PositionOutOfRange, "k_positions",
                               bias.bias(std::vector<Position>{0}, std::vector<Position>{-5}));
}

TEST_CASE("RelativeBias agrees with the bucket rule for small and huge max_distance", "[t5]") {
  // Small max_distance: the bias is a gather over clamped offsets; huge: a bucket search per key.
  // Beyond 2^31-1 the last log bins start past every distance two positions can have.
  for (const Position md : {Position{11}, Position{100}, Position{65536}, Position{65537}, Position{5000000},
                            posenc::kMaxPosition + 1, posenc::kMaxPosition + 7, Position{1} << 40,
                            std::numeric_limits<Position>::max()}) {
    for (const bool bidirectional : {true, false}) {
      INFO("max_distance " << md << ", bidirectional " << bidirectional);
      const Index nb = 20, heads = 2;
      FTensor<2> table(nb, heads);
      for (Index b = 0; b < nb; ++b) {
        for (Index h = 0; h < heads; ++h) table(b, h) = static_cast<float>(b) + 0.5f * static_cast<float>(h);
      }
      RelativeBucketConfig config;
      config.num_buckets = nb;
      config.max_distance = md;
      config.bidirectional = bidirectional;
      const posenc::RelativeBias bias(config, table);
      const RefT5Buckets ref(nb, md, bidirectional);
      std::vector<Position> k = {0,     1,     2,     5,     9,       17,      100,     1000,
                                 65535, 65536, 65537, 70000, 4999999, 5000000, 5000001, posenc::kMaxPosition};
      const std::vector<Position> q = {0, 3, 65536, 5000000, posenc::kMaxPosition};
      const FTensor<3> got = bias.bias(q, k);
      Index mismatches = 0;
      for (Index h = 0; h < heads; ++h) {
        for (Index i = 0; i < static_cast<Index>(q.size()); ++i) {
          for (Index j = 0; j < static_cast<Index>(k.size()); ++j) {
            const Index bucket = ref.bucket(k[static_cast<std::size_t>(j)] - q[static_cast<std::size_t>(i)]);
            mismatches += got(h, i, j) == table(bucket, h) ? 0 : 1;
          }
        }
      }
      CHECK(mismatches == 0);
    }
  }
}
