// Exact Bernoulli draws from 16 random bits per unit, in one pass on all torch threads.
//
// The same algorithm as ebm/ops/bernoulli.py (see its docstring for the proof): with
// x = 2^16 p and B the unit's 16 random bits, y = clamp(x - B, 0, 1) is 1 (on), 0 (off) or,
// on a tie (B = floor(x) < x, probability 2^-16), the residual that is drawn the same way
// from 16 fresh bits. x and y are exact in floating point, so P(on) = p exactly.
//
// Random bits: a counter-based generator, splitmix64 of (key + counter * golden gamma),
// keyed by one 64-bit draw from the caller's torch.Generator per call. In each block of 256
// units, unit j takes the 16-bit part j / 64 (from the lowest) of the block's word j % 64;
// the k-th tie level of unit i takes its own word. So the draws depend on the key and the
// element index only: the same for any thread count.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 with torch's Tensor and Generator casters

#include "draw.h"
#include "fastmath.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kTieKey = 0xD1B54A32D192ED03ULL;
constexpr int64_t kBlock = kDrawBlock;  // units per block
constexpr int64_t kWords = kBlock / 4;  // random words per block
constexpr int64_t kMaxLevels = 128;  // tie levels per unit (float64 needs at most ~70)
constexpr int64_t kGrainBlocks = 64;  // blocks per thread at least: 16384 units, ~15 us of work

inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// One level of the draw: clamp(2^16 q - bits, 0, 1): 1 (on), 0 (off), the residual of a
// tie in (0, 1), or NaN for a NaN q.
template <typename T>
inline T level(T q, uint32_t bits) {
  T v = q * T(65536) - T(bits);
  v = std::max(v, T(0));  // NaN stays NaN
  return std::min(v, T(1));
}

// The residual y of a tie of unit `index`, resolved with further levels; returns 1 or 0.
template <typename T>
T resolve_tie(T y, uint64_t tie_key, int64_t index) {
  const uint64_t base = static_cast<uint64_t>(index) * kMaxLevels;
  for (uint64_t k = 0; y > T(0) && y < T(1); ++k) {
    y = level(y, static_cast<uint32_t>(mix(tie_key + (base + k) * kGamma) & 0xFFFFu));
  }
  return y;
}

// The first level's random words: counter-based from the key, or given (tests).
struct HashWords {
  uint64_t key;
  uint64_t operator()(uint64_t index) const { return mix(key + index * kGamma); }
};
struct GivenWords {
  const int64_t* words;
  uint64_t n_words;  // past the end (a last block's padding): 0
  uint64_t operator()(uint64_t index) const { return index < n_words ? static_cast<uint64_t>(words[index]) : 0; }
};

// sigmoid(x) = 1 / (1 + e^-x), e^-x by fastmath.h's exp_clamped (float32; within 2.5 ulp of
// a 40-digit reference, as torch.sigmoid: tests/test_bernoulli.py), branch-free so that it vectorises; NaN
// stays NaN. float64: std::exp.
inline float sigmoid(float x) {
  return 1.0f / (1.0f + exp_clamped(std::min(std::max(-x, -87.3f), 88.7f)));  // beyond: 1 or 0 in float32
}
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// `count` <= kBlock probabilities (kLogits: logits, plus `bias` when given, whose sigmoid is
// taken first) at `q` into `y`, with their 16-bit `bits`; whether any unit tied. Branch-free,
// so that the compiler vectorises it (kCount: a compile-time count, or 0).
template <typename T, bool kLogits, bool kBias, int64_t kCount>
inline bool first_level(const T* q, const T* bias, const uint32_t* bits, T* y, int64_t count) {
  const int64_t n = kCount > 0 ? kCount : count;
  uint32_t tie = 0;  // an integer OR, which vectorises (a bool does not)
  for (int64_t j = 0; j < n; ++j) {
    T x = q[j];
    if constexpr (kBias) x += bias[j];
    if constexpr (kLogits) x = sigmoid(x);
    // level(x, bits) with fewer ops than its two clamps: on, off, or the residual (a tie) or
    // NaN, both flagged for draw_span's scalar pass (which leaves NaN as it is)
    const T v = x * T(65536) - T(bits[j]);
    const bool on = v >= T(1), off = v <= T(0);
    y[j] = on ? T(1) : (off ? T(0) : v);
    tie |= static_cast<uint32_t>(!on) & static_cast<uint32_t>(!off);
  }
  return tie != 0;
}

// Units [begin, end) of `p` (flat indices, any span), probabilities (kLogits: logits, plus the
// bias `tile[index % n_cols]` when `tile` is given) in, draws out. Unit i's bits depend on i
// alone (block i / kBlock, its position in it), so any split of a tensor into spans gives the
// same draws.
template <typename T, bool kLogits, typename Words>
void draw_span(T* p, int64_t begin, int64_t end, Words first, uint64_t tie_key, const T* tile = nullptr,
               int64_t n_cols = 1) {
  uint32_t bits[kBlock];
  for (int64_t block_start = begin / kBlock * kBlock; block_start < end; block_start += kBlock) {
    const uint64_t first_word = static_cast<uint64_t>(block_start / 4);
    // unit j of the block takes part j / kWords of word j % kWords: contiguous stores
    for (int64_t j = 0; j < kWords; ++j) {
      const uint64_t word = first(first_word + static_cast<uint64_t>(j));
      bits[j] = static_cast<uint32_t>(word & 0xFFFFu);
      bits[kWords + j] = static_cast<uint32_t>((word >> 16) & 0xFFFFu);
      bits[2 * kWords + j] = static_cast<uint32_t>((word >> 32) & 0xFFFFu);
      bits[3 * kWords + j] = static_cast<uint32_t>(word >> 48);
    }
    const int64_t start = std::max(begin, block_start), stop = std::min(end, block_start + kBlock);
    const int64_t count = stop - start;
    const uint32_t* b = bits + (start - block_start);
    T* block = p + start;
    const T* bias = tile ? tile + start % n_cols : nullptr;
    bool tie;
    if (count == kBlock) {
      tie = bias ? first_level<T, kLogits, true, kBlock>(block, bias, b, block, count)
                 : first_level<T, kLogits, false, kBlock>(block, bias, b, block, count);
    } else {
      tie = bias ? first_level<T, kLogits, true, 0>(block, bias, b, block, count)
                 : first_level<T, kLogits, false, 0>(block, bias, b, block, count);
    }
    if (tie) {
      for (int64_t j = 0; j < count; ++j) {
        if (block[j] > T(0) && block[j] < T(1)) block[j] = resolve_tie(block[j], tie_key, start + j);
      }
    }
  }
}

template <typename T, bool kLogits, typename Words>
void draw_all(T* p, int64_t n, Words first, uint64_t key) {
  const uint64_t tie_key = mix(key ^ kTieKey);
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
  at::parallel_for(0, n_blocks, kGrainBlocks, [&](int64_t b0, int64_t b1) {
    draw_span<T, kLogits>(p, b0 * kBlock, std::min(b1 * kBlock, n), first, tie_key);
  });
}

void check(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), what, " must be on the CPU");
  TORCH_CHECK(t.is_contiguous(), what, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, what, " must be float32 or float64");
}

}  // namespace

uint64_t draw_key(std::optional<at::Generator> generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->random64();
}

void sigmoid_draw_span(float* p, int64_t begin, int64_t end, uint64_t key, const float* tile, int64_t n_cols) {
  draw_span<float, true>(p, begin, end, HashWords{key}, mix(key ^ kTieKey), tile, n_cols);
}
void sigmoid_draw_span(double* p, int64_t begin, int64_t end, uint64_t key, const double* tile, int64_t n_cols) {
  draw_span<double, true>(p, begin, end, HashWords{key}, mix(key ^ kTieKey), tile, n_cols);
}

// Exact Bernoulli draws in place, of probabilities x or (kLogits) of sigmoid(x) in the same pass.
template <bool kLogits>
at::Tensor draw_in_place(at::Tensor x, std::optional<at::Generator> generator, const char* what) {
  check(x, what);
  const uint64_t key = draw_key(generator);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ebm_bernoulli_", [&] {
    draw_all<scalar_t, kLogits>(x.data_ptr<scalar_t>(), x.numel(), HashWords{key}, key);
  });
  return x;
}

at::Tensor bernoulli_(at::Tensor p, std::optional<at::Generator> generator) {
  return draw_in_place<false>(p, generator, "p");
}

at::Tensor sigmoid_bernoulli_(at::Tensor logits, std::optional<at::Generator> generator) {
  return draw_in_place<true>(logits, generator, "logits");
}

// Tests: the fused draw's sigmoid, in place.
at::Tensor sigmoid_(at::Tensor x) {
  check(x, "x");
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ebm_sigmoid_", [&] {
    scalar_t* q = x.data_ptr<scalar_t>();
    for (int64_t i = 0; i < x.numel(); ++i) q[i] = sigmoid(q[i]);
  });
  return x;
}

// Tests: the draw with the first level's words given (int64, ceil(n / 4) of them); ties
// from the generator as usual.
at::Tensor bernoulli_words_(at::Tensor p, at::Tensor words, std::optional<at::Generator> generator) {
  check(p, "p");
  TORCH_CHECK(words.scalar_type() == at::kLong && words.is_contiguous() && words.numel() >= (p.numel() + 3) / 4,
              "words must be contiguous int64, ceil(n / 4) of them");
  const uint64_t key = draw_key(generator);
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "ebm_bernoulli_words_", [&] {
    draw_all<scalar_t, false>(p.data_ptr<scalar_t>(), p.numel(), GivenWords{words.data_ptr<int64_t>(), static_cast<uint64_t>(words.numel())}, key);
  });
  return p;
}

// Tests: one level, in place, p = clamp(2^16 p - bits, 0, 1) with bits (p's dtype) in [0, 2^16).
at::Tensor decide_(at::Tensor p, at::Tensor bits) {
  check(p, "p");
  check(bits, "bits");
  TORCH_CHECK(bits.scalar_type() == p.scalar_type() && bits.numel() == p.numel(), "bits must match p");
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "ebm_decide_", [&] {
    scalar_t* q = p.data_ptr<scalar_t>();
    const scalar_t* b = bits.data_ptr<scalar_t>();
    for (int64_t i = 0; i < p.numel(); ++i) q[i] = level(q[i], static_cast<uint32_t>(b[i]));
  });
  return p;
}

// rbm.cpp
std::vector<at::Tensor> rbm_gradient(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b,
                                     const at::Tensor& v_data, const at::Tensor& v_model,
                                     const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam);
std::vector<at::Tensor> rbm_gradient_rows(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b,
                                          const at::Tensor& v_data, const at::Tensor& v_model,
                                          const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam);
std::vector<at::Tensor> rbm_sweeps(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b, at::Tensor v,
                                   at::Tensor h, const std::vector<std::string>& order, int64_t k,
                                   const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam,
                                   std::optional<at::Generator> generator);
at::Tensor rbm_draw(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b, const std::string& name,
                    const at::Tensor& x, const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam,
                    std::optional<at::Generator> generator);
int64_t rbm_chunk_rows(int64_t rows, int64_t n_visible, int64_t n_hidden);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rbm_gradient", &rbm_gradient, "the RBM's surrogate and its gradient by products", pybind11::arg("W"),
        pybind11::arg("a"), pybind11::arg("b"), pybind11::arg("v_data"), pybind11::arg("v_model"),
        pybind11::arg("mu") = pybind11::none(), pybind11::arg("lam") = pybind11::none());
  m.def("rbm_gradient_rows", &rbm_gradient_rows, "tests: rbm_gradient's row loop for small models ([] if not applicable)",
        pybind11::arg("W"), pybind11::arg("a"), pybind11::arg("b"), pybind11::arg("v_data"), pybind11::arg("v_model"),
        pybind11::arg("mu") = pybind11::none(), pybind11::arg("lam") = pybind11::none());
  m.def("rbm_sweeps", &rbm_sweeps, "k Gibbs sweeps of the RBM, the blocks in the given order", pybind11::arg("W"),
        pybind11::arg("a"), pybind11::arg("b"), pybind11::arg("v"), pybind11::arg("h"), pybind11::arg("order"),
        pybind11::arg("k"), pybind11::arg("mu") = pybind11::none(), pybind11::arg("lam") = pybind11::none(),
        pybind11::arg("generator") = pybind11::none());
  m.def("rbm_draw", &rbm_draw, "one Gibbs draw of the RBM's block `name` given the other block x",
        pybind11::arg("W"), pybind11::arg("a"), pybind11::arg("b"), pybind11::arg("name"), pybind11::arg("x"),
        pybind11::arg("mu") = pybind11::none(), pybind11::arg("lam") = pybind11::none(),
        pybind11::arg("generator") = pybind11::none());
  m.def("rbm_chunk_rows", &rbm_chunk_rows, "tests: rows per chunk of rbm_sweeps and rbm_draw");
  m.def("bernoulli_", &bernoulli_, "exact Bernoulli draws in place", pybind11::arg("p"), pybind11::arg("generator") = pybind11::none());
  m.def("sigmoid_bernoulli_", &sigmoid_bernoulli_, "exact Bernoulli(sigmoid(logits)) draws in place",
        pybind11::arg("logits"), pybind11::arg("generator") = pybind11::none());
  m.def("sigmoid_", &sigmoid_, "tests: the fused draw's sigmoid in place");
  m.def("bernoulli_words_", &bernoulli_words_, "tests: the draw with the first level's words given");
  m.def("decide_", &decide_, "tests: one level of the draw in place");
}
