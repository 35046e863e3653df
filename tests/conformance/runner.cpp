// posenc_conformance <case.json>: evaluates one conformance case (../shared/conformance/FORMAT.md)
// through posenc's public API and prints {"outputs": {...}} (exit 0) or {"error": "<class>: ..."}
// (exit 3). A thin adapter: it parses JSON into the library's parameter structs and tensors, calls
// the library, and prints. No math of its own.

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <new>
#include <optional>
#include <stdexcept>
#include <nlohmann/json.hpp>
#include <posenc/posenc.hpp>
#include <string>
#include <vector>

namespace {

using json = nlohmann::json;
using posenc::Index;
using posenc::Position;

// ---- reading parameters -----------------------------------------------------------------------

const json* find(const json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const json& required(const json& object, const char* key) {
  const json* value = find(object, key);
  if (value == nullptr) throw posenc::InvalidParameter(std::string(key) + " is required");
  return *value;
}

/// A JSON integer as int64, saturated: an integer beyond int64 (which nlohmann keeps as uint64, or
/// as a double once it passes uint64) becomes INT64_MAX or INT64_MIN, so the library rejects it
/// for what it is (a position or offset out of range, a size out of its domain), not as a
/// non-integer. Other non-integers: nullopt.
std::optional<std::int64_t> saturated_integer(const json& value) {
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
  if (value.is_number_unsigned()) {
    const auto u = value.get<std::uint64_t>();
    return u > static_cast<std::uint64_t>(kMax) ? kMax : static_cast<std::int64_t>(u);
  }
  if (value.is_number_integer()) return value.get<std::int64_t>();
  if (value.is_number_float()) {
    const double x = value.get<double>();
    if (x >= 0x1p63) return kMax;  // every double this large is an integer
    if (x <= -0x1p63) return kMin;  // below int64 (-2^63 itself parses as an integer)
  }
  return std::nullopt;
}

Index as_int(const json& value, const char* key) {
  const auto n = saturated_integer(value);
  if (!n) throw posenc::InvalidParameter(std::string(key) + " must be an integer, got " + value.dump());
  return *n;
}
double as_number(const json& value, const char* key) {
  if (!value.is_number()) throw posenc::InvalidParameter(std::string(key) + " must be a number, got " + value.dump());
  return value.get<double>();
}
bool as_bool(const json& value, const char* key) {
  if (!value.is_boolean()) throw posenc::InvalidParameter(std::string(key) + " must be true or false, got " + value.dump());
  return value.get<bool>();
}
std::string as_string(const json& value, const char* key) {
  if (!value.is_string()) throw posenc::InvalidParameter(std::string(key) + " must be a string, got " + value.dump());
  return value.get<std::string>();
}
std::vector<double> as_numbers(const json& value, const char* key) {
  if (!value.is_array()) throw posenc::InvalidParameter(std::string(key) + " must be a list of numbers");
  std::vector<double> out;
  for (const json& item : value) out.push_back(as_number(item, key));
  return out;
}

Index int_or(const json& object, const char* key, Index fallback) {
  const json* value = find(object, key);
  return value ? as_int(*value, key) : fallback;
}
double number_or(const json& object, const char* key, double fallback) {
  const json* value = find(object, key);
  return value ? as_number(*value, key) : fallback;
}
bool bool_or(const json& object, const char* key, bool fallback) {
  const json* value = find(object, key);
  return value ? as_bool(*value, key) : fallback;
}
std::string string_or(const json& object, const char* key, const std::string& fallback) {
  const json* value = find(object, key);
  return value ? as_string(*value, key) : fallback;
}
std::optional<double> optional_number(const json& object, const char* key) {
  const json* value = find(object, key);
  return value ? std::optional<double>(as_number(*value, key)) : std::nullopt;
}

// ---- reading tensors --------------------------------------------------------------------------

template <class T>
struct Input {
  std::vector<Index> shape;
  std::vector<T> data;
  Index rank() const { return static_cast<Index>(shape.size()); }
  template <int Rank>
  posenc::TensorRef<const T, Rank> view() const {
    std::array<Index, Rank> dims{};
    for (int i = 0; i < Rank; ++i) dims[static_cast<std::size_t>(i)] = shape[static_cast<std::size_t>(i)];
    return {data.data(), dims};
  }
};

template <class T>
T element(const json& value, const char* name) {
  if constexpr (std::is_integral_v<T>) {
    static_assert(std::is_same_v<T, std::int64_t>, "integer inputs are read as int64");
    const auto n = saturated_integer(value);
    if (!n) throw posenc::InvalidParameter(std::string(name) + " holds a non-integer entry " + value.dump());
    return *n;
  } else {
    if (!value.is_number()) throw posenc::InvalidParameter(std::string(name) + " holds a non-number " + value.dump());
    return static_cast<T>(value.get<double>());  // exact: every input float is float32-representable
  }
}

template <class T>
std::optional<Input<T>> optional_tensor(const json& inputs, const char* name) {
  const json* t = find(inputs, name);
  if (t == nullptr) return std::nullopt;
  const json* shape = t->is_object() ? find(*t, "shape") : nullptr;
  const json* data = t->is_object() ? find(*t, "data") : nullptr;
  if (shape == nullptr || data == nullptr || !shape->is_array() || !data->is_array()) {
    throw posenc::ShapeMismatch(std::string(name) + " must be {\"shape\": [...], \"data\": [...]}");
  }
  Input<T> in;
  Index count = 1;
  bool overflow = false;  // a product past int64 cannot equal the number of values given
  for (const json& d : *shape) {
    const auto dim = saturated_integer(d);
    if (!dim || *dim < 0) throw posenc::ShapeMismatch(std::string(name) + " has a bad dimension " + d.dump());
    in.shape.push_back(*dim);
    overflow = overflow || __builtin_mul_overflow(count, *dim, &count);
  }
  if (overflow || static_cast<Index>(data->size()) != count) {
    throw posenc::ShapeMismatch(std::string(name) + " has " + std::to_string(data->size()) + " values for shape " +
                                shape->dump());
  }
  in.data.reserve(static_cast<std::size_t>(count));
  for (const json& v : *data) in.data.push_back(element<T>(v, name));
  return in;
}

template <class T>
Input<T> tensor(const json& inputs, const char* name, Index rank) {
  auto in = optional_tensor<T>(inputs, name);
  if (!in) throw posenc::ShapeMismatch(std::string(name) + " is required");
  if (in->rank() != rank) {
    throw posenc::ShapeMismatch(std::string(name) + " must have rank " + std::to_string(rank) + ", got rank " +
                                std::to_string(in->rank()));
  }
  return *in;
}

/// key_padding as the library's uint8 mask; values outside a byte cannot be represented.
std::optional<Input<std::uint8_t>> key_padding(const json& inputs, Index rank) {
  auto raw = optional_tensor<std::int64_t>(inputs, "key_padding");
  if (!raw) return std::nullopt;
  if (raw->rank() != rank) throw posenc::ShapeMismatch("key_padding must have rank " + std::to_string(rank));
  Input<std::uint8_t> mask{raw->shape, {}};
  for (std::int64_t v : raw->data) {
    if (v < 0 || v > 255) throw posenc::InvalidParameter("key_padding value " + std::to_string(v) + " is not 0 or 1");
    mask.data.push_back(static_cast<std::uint8_t>(v));
  }
  return mask;
}

void require_dim(bool ok, const std::string& what) {
  if (!ok) throw posenc::ShapeMismatch(what);
}

// ---- parameters → library structs ------------------------------------------------------------

posenc::RopeScaling rope_scaling(const json& params) {
  const json* object = find(params, "scaling");
  if (object == nullptr) return posenc::RopeScaling::none();
  if (!object->is_object()) throw posenc::InvalidParameter("scaling must be an object");
  const json& s = *object;
  posenc::RopeScaling scaling;
  scaling.type = posenc::parse_rope_scaling_type(as_string(required(s, "type"), "type"));
  using Type = posenc::RopeScalingType;
  switch (scaling.type) {
    case Type::kNone:
      break;
    case Type::kLinear:
    case Type::kNtk:
      scaling.factor = as_number(required(s, "factor"), "factor");
      break;
    case Type::kDynamic:
      scaling.factor = as_number(required(s, "factor"), "factor");
      scaling.original_max_position_embeddings = as_int(required(s, "original_max_position_embeddings"), "original_max_position_embeddings");
      break;
    case Type::kYarn:
      scaling.factor = as_number(required(s, "factor"), "factor");
      scaling.original_max_position_embeddings = as_int(required(s, "original_max_position_embeddings"), "original_max_position_embeddings");
      scaling.beta_fast = number_or(s, "beta_fast", 32.0);
      scaling.beta_slow = number_or(s, "beta_slow", 1.0);
      scaling.mscale = optional_number(s, "mscale");
      scaling.mscale_all_dim = optional_number(s, "mscale_all_dim");
      scaling.attention_factor = optional_number(s, "attention_factor");
      scaling.truncate = bool_or(s, "truncate", true);
      break;
    case Type::kLlama3:
      scaling.factor = as_number(required(s, "factor"), "factor");
      scaling.original_max_position_embeddings = as_int(required(s, "original_max_position_embeddings"), "original_max_position_embeddings");
      scaling.low_freq_factor = as_number(required(s, "low_freq_factor"), "low_freq_factor");
      scaling.high_freq_factor = as_number(required(s, "high_freq_factor"), "high_freq_factor");
      break;
    case Type::kLongRope:
      scaling.original_max_position_embeddings = as_int(required(s, "original_max_position_embeddings"), "original_max_position_embeddings");
      scaling.short_factor = as_numbers(required(s, "short_factor"), "short_factor");
      scaling.long_factor = as_numbers(required(s, "long_factor"), "long_factor");
      scaling.factor = number_or(s, "factor", 1.0);
      scaling.attention_factor = optional_number(s, "attention_factor");
      break;
  }
  return scaling;
}

posenc::RoPE rope_policy(const json& params, Index head_dim) {
  posenc::RopeConfig config;
  config.head_dim = head_dim;
  config.rotary_dim = int_or(params, "rotary_dim", head_dim);
  config.base = number_or(params, "base", 10000.0);
  config.layout = posenc::parse_rope_layout(string_or(params, "layout", "half"));
  config.scaling = rope_scaling(params);
  return posenc::RoPE(config);
}

posenc::RelativeBucketConfig bucket_config(const json& params) {
  posenc::RelativeBucketConfig config;
  config.num_buckets = int_or(params, "num_buckets", 32);
  config.max_distance = int_or(params, "max_distance", 128);
  config.bidirectional = bool_or(params, "bidirectional", true);
  return config;
}

posenc::Sinusoidal sinusoidal_policy(const json& params, Index dim) {
  return posenc::Sinusoidal(dim, number_or(params, "base", 10000.0),
                            posenc::parse_sinusoidal_layout(string_or(params, "layout", "interleaved")));
}

/// Calls `body(policy)` with the policy an "encoding" object describes (attention and mha).
template <class Body>
void with_encoding(const json& params, const json& inputs, Index heads, Index head_dim, Index d_model, bool mha,
                   Body&& body) {
  const json* object = find(params, "encoding");
  if (object != nullptr && !object->is_object()) throw posenc::InvalidParameter("encoding must be an object");
  const json empty = json::object();
  const json& encoding = object ? *object : empty;
  const std::string type = object ? as_string(required(encoding, "type"), "encoding type") : "none";
  if (type == "none") return body(posenc::NoPosition{});
  if (type == "alibi") return body(posenc::ALiBi(heads));
  if (type == "rope") {
    if (const json* d = find(encoding, "head_dim"); d != nullptr && as_int(*d, "head_dim") != head_dim) {
      throw posenc::InvalidParameter("encoding head_dim " + d->dump() + " differs from head_dim " + std::to_string(head_dim));
    }
    return body(rope_policy(encoding, head_dim));
  }
  if (type == "relative_bias") {
    const auto table = tensor<float>(inputs, "table", 2);
    return body(posenc::RelativeBias(bucket_config(encoding), table.view<2>()));
  }
  if (mha && type == "sinusoidal") return body(sinusoidal_policy(encoding, d_model));
  if (mha && type == "learned_absolute") {
    const auto table = tensor<float>(inputs, "table", 2);
    require_dim(table.shape[1] == d_model, "table must be [max_len, d_model = " + std::to_string(d_model) + "]");
    return body(posenc::LearnedAbsolute(table.view<2>()));
  }
  throw posenc::InvalidParameter("unknown encoding type \"" + type + "\"");
}

// ---- printing --------------------------------------------------------------------------------

struct Output {
  std::string name;
  std::vector<Index> shape;
  std::function<void(std::string&)> write_data;
};

template <class T, int Rank>
Output output(const std::string& name, const posenc::Tensor<T, Rank>& t) {
  Output out{name, {}, {}};
  for (int i = 0; i < Rank; ++i) out.shape.push_back(t.dimension(i));
  out.write_data = [&t](std::string& s) {
    char buffer[40];
    for (Index i = 0; i < t.size(); ++i) {
      if constexpr (std::is_integral_v<T>) {
        std::snprintf(buffer, sizeof buffer, "%s%lld", i ? "," : "", static_cast<long long>(t.data()[i]));
      } else {
        std::snprintf(buffer, sizeof buffer, "%s%.9g", i ? "," : "", static_cast<double>(t.data()[i]));
      }
      s += buffer;
    }
  };
  return out;
}

void print_outputs(const std::vector<Output>& outputs) {
  std::string s = "{\"outputs\": {";
  for (std::size_t o = 0; o < outputs.size(); ++o) {
    s += o ? ", \"" : "\"";
    s += outputs[o].name;
    s += "\": {\"shape\": [";
    for (std::size_t i = 0; i < outputs[o].shape.size(); ++i) {
      s += i ? "," : "";
      s += std::to_string(outputs[o].shape[i]);
    }
    s += "], \"data\": [";
    outputs[o].write_data(s);
    s += "]}";
  }
  s += "}}\n";
  std::fwrite(s.data(), 1, s.size(), stdout);
}

// ---- ops --------------------------------------------------------------------------------------

void run_sinusoidal(const json& params, const json& inputs) {
  const auto encoding = sinusoidal_policy(params, as_int(required(params, "dim"), "dim"));
  const auto positions = tensor<Position>(inputs, "positions", 1);
  const auto pe = encoding.encode(positions.view<1>());
  print_outputs({output("pe", pe)});
}

void run_learned_absolute(const json&, const json& inputs) {
  const auto table = tensor<float>(inputs, "table", 2);
  const auto x = tensor<float>(inputs, "x", 2);
  const json* offset_json = find(inputs, "offset");
  const Position offset = offset_json ? as_int(*offset_json, "offset") : 0;
  const posenc::LearnedAbsolute encoding(table.view<2>());
  posenc::Tensor<float, 2> y = x.view<2>().map();
  encoding.add_to(y, offset);
  print_outputs({output("y", y)});
}

void run_rope(const json& params, const json& inputs) {
  const auto encoding = rope_policy(params, as_int(required(params, "head_dim"), "head_dim"));
  const auto x = tensor<float>(inputs, "x", 3);
  const auto positions = tensor<Position>(inputs, "positions", 1);
  const auto y = encoding.rotate(x.view<3>(), positions.view<1>());
  print_outputs({output("y", y)});
}

void run_alibi_slopes(const json& params, const json&) {
  const auto slopes = posenc::alibi_slopes(as_int(required(params, "num_heads"), "num_heads"));
  posenc::Tensor<double, 1> out(static_cast<Index>(slopes.size()));
  std::copy(slopes.begin(), slopes.end(), out.data());
  Output o = output("slopes", out);
  o.write_data = [&out](std::string& s) {
    char buffer[40];
    for (Index i = 0; i < out.size(); ++i) {
      std::snprintf(buffer, sizeof buffer, "%s%.17g", i ? "," : "", out(i));
      s += buffer;
    }
  };
  print_outputs({o});
}

void run_alibi_bias(const json& params, const json& inputs) {
  const posenc::ALiBi encoding(as_int(required(params, "num_heads"), "num_heads"));
  const auto q = tensor<Position>(inputs, "q_positions", 1);
  const auto k = tensor<Position>(inputs, "k_positions", 1);
  const auto bias = encoding.bias(q.view<1>(), k.view<1>());
  print_outputs({output("bias", bias)});
}

void run_relative_bucket(const json& params, const json& inputs) {
  const posenc::RelativeBuckets buckets(bucket_config(params));
  const auto q = tensor<Position>(inputs, "q_positions", 1);
  const auto k = tensor<Position>(inputs, "k_positions", 1);
  const auto out = buckets.buckets(q.view<1>(), k.view<1>());
  print_outputs({output("buckets", out)});
}

void run_relative_bias(const json& params, const json& inputs) {
  const auto table = tensor<float>(inputs, "table", 2);
  const posenc::RelativeBias encoding(bucket_config(params), table.view<2>());
  const auto q = tensor<Position>(inputs, "q_positions", 1);
  const auto k = tensor<Position>(inputs, "k_positions", 1);
  const auto bias = encoding.bias(q.view<1>(), k.view<1>());
  print_outputs({output("bias", bias)});
}

posenc::AttentionOptions attention_options(const json& params) {
  posenc::AttentionOptions options;
  options.causal = bool_or(params, "causal", false);
  options.scale = optional_number(params, "scale");
  return options;
}

void run_attention(const json& params, const json& inputs) {
  const Index heads = as_int(required(params, "num_heads"), "num_heads");
  const Index kv_heads = int_or(params, "num_kv_heads", heads);
  const Index head_dim = as_int(required(params, "head_dim"), "head_dim");
  if (heads < 1 || kv_heads < 1 || head_dim < 1 || heads % kv_heads != 0) {
    throw posenc::InvalidParameter("num_heads " + std::to_string(heads) + " must be a positive multiple of num_kv_heads " +
                                   std::to_string(kv_heads) + ", head_dim " + std::to_string(head_dim) + " >= 1");
  }
  const auto q_raw = optional_tensor<float>(inputs, "q");
  require_dim(q_raw.has_value(), "q is required");
  const Index rank = q_raw->rank();
  require_dim(rank == 3 || rank == 4, "q must have rank 3 or 4, got " + std::to_string(rank));
  const bool batched = rank == 4;
  const auto q = tensor<float>(inputs, "q", rank);
  const auto k = tensor<float>(inputs, "k", rank);
  const auto v = tensor<float>(inputs, "v", rank);
  const auto q_positions = tensor<Position>(inputs, "q_positions", rank - 2);
  const auto k_positions = tensor<Position>(inputs, "k_positions", rank - 2);
  const auto padding = key_padding(inputs, rank - 2);
  const std::size_t b = batched ? 1 : 0;
  require_dim(q.shape[b + 1] == heads && q.shape[b + 2] == head_dim, "q must be [.., Lq, num_heads, head_dim]");
  require_dim(k.shape[b + 1] == kv_heads, "k must be [.., Lk, num_kv_heads, head_dim]");
  const auto options = attention_options(params);
  with_encoding(params, inputs, heads, head_dim, 0, false, [&](const auto& policy) {
    if (batched) {
      const auto o = posenc::attention(q.view<4>(), k.view<4>(), v.view<4>(), q_positions.view<2>(), k_positions.view<2>(),
                                       policy, options, padding ? padding->view<2>() : posenc::BatchKeyPaddingRef{});
      print_outputs({output("o", o)});
    } else {
      const auto o = posenc::attention(q.view<3>(), k.view<3>(), v.view<3>(), q_positions.view<1>(), k_positions.view<1>(),
                                       policy, options, padding ? padding->view<1>() : posenc::KeyPaddingRef{});
      print_outputs({output("o", o)});
    }
  });
}

void run_mha(const json& params, const json& inputs) {
  const Index d_model = as_int(required(params, "d_model"), "d_model");
  const Index heads = as_int(required(params, "num_heads"), "num_heads");
  if (d_model < 1 || heads < 1 || d_model % heads != 0) {
    throw posenc::InvalidParameter("num_heads " + std::to_string(heads) + " must divide d_model " + std::to_string(d_model));
  }
  const auto x_raw = optional_tensor<float>(inputs, "x");
  require_dim(x_raw.has_value(), "x is required");
  const Index rank = x_raw->rank();
  require_dim(rank == 2 || rank == 3, "x must have rank 2 or 3, got " + std::to_string(rank));
  require_dim(x_raw->shape.back() == d_model, "x must be [.., L, d_model = " + std::to_string(d_model) + "]");
  const auto& x = *x_raw;
  const auto wq = tensor<float>(inputs, "wq", 2);
  const auto wk = tensor<float>(inputs, "wk", 2);
  const auto wv = tensor<float>(inputs, "wv", 2);
  const auto wo = tensor<float>(inputs, "wo", 2);
  const auto positions = tensor<Position>(inputs, "positions", rank - 1);
  const auto padding = key_padding(inputs, rank - 1);
  const auto options = attention_options(params);
  with_encoding(params, inputs, heads, d_model / heads, d_model, true, [&](const auto& policy) {
    if (rank == 3) {
      const auto y = posenc::multi_head_attention(x.view<3>(), wq.view<2>(), wk.view<2>(), wv.view<2>(), wo.view<2>(),
                                                  positions.view<2>(), heads, policy, options,
                                                  padding ? padding->view<2>() : posenc::BatchKeyPaddingRef{});
      print_outputs({output("y", y)});
    } else {
      const auto y = posenc::multi_head_attention(x.view<2>(), wq.view<2>(), wk.view<2>(), wv.view<2>(), wo.view<2>(),
                                                  positions.view<1>(), heads, policy, options,
                                                  padding ? padding->view<1>() : posenc::KeyPaddingRef{});
      print_outputs({output("y", y)});
    }
  });
}

void run_case(const json& c) {
  if (!c.is_object()) throw posenc::InvalidParameter("a case must be a JSON object");
  const std::string op = as_string(required(c, "op"), "op");
  const json empty = json::object();
  const json& params = find(c, "params") ? c["params"] : empty;
  const json& inputs = find(c, "inputs") ? c["inputs"] : empty;
  if (!params.is_object() || !inputs.is_object()) throw posenc::InvalidParameter("params and inputs must be objects");
  using Op = void (*)(const json&, const json&);
  static const std::pair<const char*, Op> kOps[] = {
      {"sinusoidal", run_sinusoidal},           {"learned_absolute", run_learned_absolute},
      {"rope", run_rope},                       {"alibi_slopes", run_alibi_slopes},
      {"alibi_bias", run_alibi_bias},           {"relative_bucket", run_relative_bucket},
      {"relative_bias", run_relative_bias},     {"attention", run_attention},
      {"mha", run_mha},
  };
  for (const auto& [name, run] : kOps) {
    if (op == name) return run(params, inputs);
  }
  throw posenc::InvalidParameter("unknown op \"" + op + "\"");
}

int reject(const char* error_class, const std::string& message) {
  const json out = {{"error", std::string(error_class) + ": " + message}};
  std::cout << out.dump() << '\n';
  return 3;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: posenc_conformance <case.json>\n";
    return 2;
  }
  json c;
  try {
    std::ifstream in(argv[1]);
    if (!in) {
      std::cerr << "posenc_conformance: cannot open " << argv[1] << '\n';
      return 2;
    }
    c = json::parse(in);
  } catch (const json::exception& e) {
    std::cerr << "posenc_conformance: " << argv[1] << " is not JSON: " << e.what() << '\n';
    return 2;
  }
  try {
    run_case(c);
    return 0;
  } catch (const posenc::ShapeMismatch& e) {
    return reject("shape_mismatch", e.what());
  } catch (const std::invalid_argument& e) {
    return reject("invalid_param", e.what());
  } catch (const std::out_of_range& e) {
    return reject("out_of_range", e.what());
  } catch (const json::exception& e) {
    return reject("invalid_param", e.what());
  } catch (const std::length_error& e) {  // a size in its domain, too large to allocate
    return reject("invalid_param", std::string("too large to allocate: ") + e.what());
  } catch (const std::bad_alloc& e) {
    return reject("invalid_param", std::string("too large to allocate: ") + e.what());
  }
}
