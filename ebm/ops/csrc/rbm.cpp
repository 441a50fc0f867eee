// The RBM's training gradient by matrix products (ebm/training/rbm_step.py has the math):
// the same ATen ops as its eager path, called from C++ so that a small model's update does
// not pay Python's dispatch per op (~14 ops). And its Gibbs sweeps (rbm_sweeps, rbm_draw):
// chunks of chains, each multiplied by BLAS and drawn by the fused exact draw on one thread.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include "draw.h"
#include "fastmath.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <optional>
#include <string>
#include <vector>

namespace {

// e^-t for t >= 0: vectorisable in float32 (fastmath.h), std::exp in float64
inline float exp_neg(float t) { return exp_clamped(std::max(-t, -87.3f)); }
inline double exp_neg(double t) { return std::exp(-t); }

// Hidden units per product of sigmoid(|u|) in [1/2, 1]: 2^-64 stays a normal float32.
constexpr int64_t kProductChunk = 64;

// The elementwise part of the gradient in one pass over the rows of u = xW + b (the two
// products stay BLAS's), for small models where ~14 elementwise ATen ops cost more in
// dispatch than in arithmetic. Row r (weight c: 1/n_data for data rows, -1/n_model for model
// rows): p = sigmoid(u), d = c (lam - p) (written over u), db += d, da -= c x;
// loss += c F with F = -a.x + lam.u - sum softplus(u), softplus(u) = max(u, 0) - log
// sigmoid(|u|), the logs summed as the log of products (one log per chunk of units).
template <typename T>
void gradient_rows(const T* x, T* u, const T* a, const T* lam, int64_t n_data, int64_t n_model, int64_t n_v,
                   int64_t n_h, T* da, T* db, double* loss) {
  std::vector<T> s_buf(n_h);
  T* __restrict__ s = s_buf.data();
  double total = 0.0;
  for (int64_t r = 0; r < n_data + n_model; ++r) {
    const T c = r < n_data ? T(1) / T(n_data) : T(-1) / T(n_model);
    const T* __restrict__ xr = x + r * n_v;
    T* __restrict__ ur = u + r * n_h;
    T ax = 0;
#pragma omp simd reduction(+ : ax)
    for (int64_t i = 0; i < n_v; ++i) {
      ax += a[i] * xr[i];
      da[i] -= c * xr[i];
    }
    T linear = 0, relu = 0;
#pragma omp simd reduction(+ : linear, relu)
    for (int64_t j = 0; j < n_h; ++j) {
      const T uj = ur[j];
      const T l = lam ? lam[j] : T(0);
      const T e = exp_neg(uj < T(0) ? -uj : uj);
      const T sig = T(1) / (T(1) + e);  // sigmoid(|u|)
      s[j] = sig;
      const T d = c * (l - (uj >= T(0) ? sig : e * sig));
      ur[j] = d;
      db[j] += d;
      linear += l * uj;
      relu += uj > T(0) ? uj : T(0);
    }
    double log_sig = 0.0;
    for (int64_t j0 = 0; j0 < n_h; j0 += kProductChunk) {
      T product = 1;
      for (int64_t j = j0; j < std::min(n_h, j0 + kProductChunk); ++j) product *= s[j];
      log_sig += std::log(static_cast<double>(product));
    }
    total += static_cast<double>(c) * (static_cast<double>(linear) - ax - relu + log_sig);
  }
  *loss = total;
}

// Above this many multiply-adds per product, the ATen path's vectorised ops are as good.
constexpr int64_t kRowsMaxWork = int64_t(1) << 19;

}  // namespace

// The gradient with gradient_rows's elementwise pass, or an empty vector when it does not apply (CPU, float32 or
// float64, contiguous tensors of W's dtype, a small model): then rbm_gradient's ATen ops.
std::vector<at::Tensor> rbm_gradient_rows(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b,
                                          const at::Tensor& v_data, const at::Tensor& v_model,
                                          const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam) {
  c10::NoGradGuard no_grad;
  const at::ScalarType type = W.scalar_type();
  if ((type != at::kFloat && type != at::kDouble) || W.dim() != 2 || mu.has_value() != lam.has_value()) return {};
  std::vector<const at::Tensor*> all = {&W, &a, &b, &v_data, &v_model};
  if (mu.has_value()) all.insert(all.end(), {&*mu, &*lam});
  for (const at::Tensor* t : all) {
    if (!t->device().is_cpu() || !t->is_contiguous() || t->scalar_type() != type) return {};
  }
  const int64_t n_v = W.size(0), n_h = W.size(1);
  if (v_data.dim() != 2 || v_model.dim() != 2 || v_data.size(1) != n_v || v_model.size(1) != n_v ||
      a.numel() != n_v || b.numel() != n_h || (mu.has_value() && (mu->numel() != n_v || lam->numel() != n_h)) ||
      v_data.size(0) < 1 || v_model.size(0) < 1 || (v_data.size(0) + v_model.size(0)) * n_v * n_h > kRowsMaxWork)
    return {};
  at::Tensor x = at::cat({v_data, v_model});
  if (mu.has_value()) x = x - *mu;
  at::Tensor u = at::addmm(b, x, W);
  at::Tensor da = at::zeros_like(a), db = at::zeros_like(b);
  double loss = 0.0;
  AT_DISPATCH_FLOATING_TYPES(type, "ebm_rbm_gradient_rows", [&] {
    gradient_rows<scalar_t>(x.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                            lam.has_value() ? lam->data_ptr<scalar_t>() : nullptr, v_data.size(0), v_model.size(0), n_v,
                            n_h, da.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), &loss);
  });
  at::Tensor dW = at::mm(x.t(), u);  // u now holds d
  return {at::scalar_tensor(loss, W.options()), dW, da, db};
}

// Returns {loss, dW, da, db}: the surrogate mean F(v_data) - mean F(v_model) and its gradient.
// mu, lam: the centered RBM's offsets (both or neither). Small models: rbm_gradient_rows.
std::vector<at::Tensor> rbm_gradient(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b,
                                     const at::Tensor& v_data, const at::Tensor& v_model,
                                     const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam) {
  std::vector<at::Tensor> rows = rbm_gradient_rows(W, a, b, v_data, v_model, mu, lam);
  if (!rows.empty()) return rows;
  c10::NoGradGuard no_grad;
  const int64_t n_data = v_data.size(0), n_model = v_model.size(0);
  at::Tensor x = at::cat({v_data, v_model});
  at::Tensor weight = at::empty({n_data + n_model}, x.options());
  weight.narrow(0, 0, n_data).fill_(1.0 / static_cast<double>(n_data));
  weight.narrow(0, n_data, n_model).fill_(-1.0 / static_cast<double>(n_model));
  if (mu.has_value()) x = x - *mu;
  at::Tensor u = at::addmm(b, x, W);
  // F per row: -a.x + lam.u - sum softplus(u)
  at::Tensor free = at::softplus(u).sum(1).neg_().sub_(at::mv(x, a));
  if (lam.has_value()) free.add_(at::mv(u, *lam));
  at::Tensor loss = at::dot(weight, free);
  at::Tensor d = u.sigmoid_().neg_();
  if (lam.has_value()) d.add_(*lam);
  d.mul_(weight.unsqueeze(1));
  return {loss, at::mm(x.t(), d), at::mv(x.t(), weight).neg_(), d.sum(0)};
}

// The BLAS that torch links (MKL, OpenBLAS), Fortran interface, as ATen calls it; weak, so
// that a torch without them still loads this module (chunk products then go through
// at::mm_out). The integers are passed as int64 holding values below 2^31, which an LP64
// (32-bit) and an ILP64 (64-bit) interface both read correctly (little-endian).
extern "C" {
void sgemm_(const char* transa, const char* transb, const void* m, const void* n, const void* k, const float* alpha,
            const float* a, const void* lda, const float* b, const void* ldb, const float* beta, float* c,
            const void* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const void* m, const void* n, const void* k, const double* alpha,
            const double* a, const void* lda, const double* b, const void* ldb, const double* beta, double* c,
            const void* ldc) __attribute__((weak));
}

namespace {

// out (rows, n_out) = x (rows, n_in) @ W (n_in, n_out), or @ W^T (W: (n_out, n_in)) when
// `transposed`; all row-major and contiguous. BLAS directly (no dispatch: small models call
// this several times a sweep), else at::mm_out.
template <typename T>
void product(const at::Tensor& x, const at::Tensor& W, bool transposed, at::Tensor& out) {
  const int64_t rows = x.size(0), n_in = x.size(1), n_out = out.size(1);
  constexpr bool is_float = std::is_same_v<T, float>;
  const bool blas = (is_float ? sgemm_ != nullptr : dgemm_ != nullptr) &&
                    std::max({rows, n_in, n_out}) < std::numeric_limits<int32_t>::max();
  if (!blas || rows == 0 || n_in == 0) {
    at::mm_out(out, x, transposed ? W.t() : W);
    return;
  }
  // column-major: out^T (n_out, rows) = op(W)^T (n_out, n_in) @ x^T (n_in, rows)
  const int64_t m = n_out, n = rows, k = n_in, lda = transposed ? n_in : n_out, ldb = n_in, ldc = n_out;
  const char ta = transposed ? 'T' : 'N', tb = 'N';
  const T one = 1, zero = 0;
  if constexpr (is_float) {
    sgemm_(&ta, &tb, &m, &n, &k, &one, W.data_ptr<T>(), &lda, x.data_ptr<T>(), &ldb, &zero, out.data_ptr<T>(), &ldc);
  } else {
    dgemm_(&ta, &tb, &m, &n, &k, &one, W.data_ptr<T>(), &lda, x.data_ptr<T>(), &ldb, &zero, out.data_ptr<T>(), &ldc);
  }
}

// Rows per chunk of the sweeps: a power-of-two number of chunks (so that 2 or 4 threads share
// them evenly), each of >= 64 rows and >= 2^20 multiply-adds per product (below that BLAS
// and the call cost more per row: 1 thread, 1000 chains, 64x100 ran at 0.52 of the bare
// products with chunks of 125 rows, 0.57 with 250 to 1000; 784x500 at 0.86 with 63 rows,
// 0.88-0.90 with 125 to 1000). From the sizes alone, never the thread count, so that the
// chains do not depend on it.
int64_t chunk_rows(int64_t rows, int64_t n_visible, int64_t n_hidden) {
  const int64_t by_rows = rows / 64, by_work = rows * n_visible * n_hidden >> 20;
  int64_t chunks = 1;
  while (chunks * 2 <= std::min(by_rows, by_work)) chunks *= 2;
  return std::max<int64_t>(1, (rows + chunks - 1) / chunks);
}

// The bias repeated to n + kDrawBlock values (sigmoid_draw_span's tile).
template <typename T>
std::vector<T> bias_tile(const at::Tensor& bias) {
  const at::Tensor c = bias.contiguous();
  const T* data = c.data_ptr<T>();
  const int64_t n = c.numel();
  TORCH_CHECK(n > 0, "the RBM needs at least one unit per block");
  std::vector<T> tile(n + kDrawBlock);
  std::copy(data, data + n, tile.begin());
  for (int64_t i = n; i < n + kDrawBlock; ++i) tile[i] = tile[i - n];
  return tile;
}

// `k` sweeps of the blocks in `order` ("v", "h"), chunk by chunk of rows: each chunk's
// product (BLAS on one thread) and then its fused draw while it is in cache, all chunks in
// one parallel region, with no synchronisation between sweeps (the chains are independent).
// The first draw of a block reads the caller's `v_in`/`h_in` and writes `v_out`/`h_out`,
// later ones overwrite those in place. `keys`: one per (sweep, block), in that order. The
// draws of a unit depend on its key and flat index only, so the chains do not depend on the
// thread count.
template <typename T>
void chunked_sweeps(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b, const at::Tensor& v_in,
                    const at::Tensor& h_in, at::Tensor& v_out, at::Tensor& h_out, const std::vector<char>& order,
                    int64_t k, const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam,
                    const std::vector<uint64_t>& keys) {
  const int64_t n_v = W.size(0), n_h = W.size(1);
  const int64_t rows = (v_out.defined() ? v_out : h_out).size(0);
  const std::vector<T> tile_a = v_out.defined() ? bias_tile<T>(a) : std::vector<T>();
  const std::vector<T> tile_b = h_out.defined() ? bias_tile<T>(b) : std::vector<T>();
  const int64_t per_chunk = chunk_rows(rows, n_v, n_h);
  const int64_t n_chunks = (rows + per_chunk - 1) / per_chunk;
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t r0 = c * per_chunk, len = std::min(per_chunk, rows - r0);
      at::Tensor v = v_in.defined() ? v_in.narrow(0, r0, len) : at::Tensor();
      at::Tensor h = h_in.defined() ? h_in.narrow(0, r0, len) : at::Tensor();
      for (int64_t sweep = 0; sweep < k; ++sweep) {
        for (size_t i = 0; i < order.size(); ++i) {
          const uint64_t key = keys[sweep * order.size() + i];
          if (order[i] == 'h') {
            at::Tensor out = h_out.narrow(0, r0, len);
            product<T>(mu.has_value() ? v - *mu : v, W, false, out);
            sigmoid_draw_span(h_out.data_ptr<T>(), r0 * n_h, (r0 + len) * n_h, key, tile_b.data(), n_h);
            h = out;
          } else {
            at::Tensor out = v_out.narrow(0, r0, len);
            product<T>(lam.has_value() ? h - *lam : h, W, true, out);
            sigmoid_draw_span(v_out.data_ptr<T>(), r0 * n_v, (r0 + len) * n_v, key, tile_a.data(), n_v);
            v = out;
          }
        }
      }
    }
  });
}

std::vector<char> parse_order(const std::vector<std::string>& order) {
  std::vector<char> names;
  for (const std::string& name : order) {
    TORCH_CHECK(name == "v" || name == "h", "the RBM has no block '", name, "'");
    names.push_back(name[0]);
  }
  return names;
}

at::Tensor input(const at::Tensor& x, const at::Tensor& W, int64_t width, const char* what) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == width, what, " must be (n_chains, ", width, ")");
  TORCH_CHECK(x.scalar_type() == W.scalar_type() && x.device().is_cpu(), what, " must be on the CPU with W's dtype");
  return x.contiguous();
}

}  // namespace

// k Gibbs sweeps of the (centered) RBM, each block of `order` ("v", "h") drawn in turn from
// its logits (v - mu)W + b or (h - lam)W^T + a: product, bias, sigmoid and exact draw, chunk
// by chunk of rows (chunked_sweeps). The same keys in the same order as rbm_draw once per
// block and sweep, and the same chunks, so the same chains as k Python-level sweeps; only
// the per-sweep dispatch is saved. Returns the final {v, h} (new tensors when drawn; the
// caller's are never written).
std::vector<at::Tensor> rbm_sweeps(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b, at::Tensor v,
                                   at::Tensor h, const std::vector<std::string>& order, int64_t k,
                                   const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam,
                                   std::optional<at::Generator> generator) {
  c10::NoGradGuard no_grad;
  TORCH_CHECK(k >= 0, "k must be >= 0");
  TORCH_CHECK(W.scalar_type() == at::kFloat || W.scalar_type() == at::kDouble, "W must be float32 or float64");
  const std::vector<char> names = parse_order(order);
  if (k == 0 || names.empty()) return {v, h};
  const at::Tensor Wc = W.contiguous();
  const at::Tensor v_in = input(v, Wc, Wc.size(0), "v"), h_in = input(h, Wc, Wc.size(1), "h");
  TORCH_CHECK(v_in.size(0) == h_in.size(0), "v and h must have the same number of chains");
  const bool draws_v = std::count(names.begin(), names.end(), 'v') > 0;
  const bool draws_h = std::count(names.begin(), names.end(), 'h') > 0;
  at::Tensor v_out = draws_v ? at::empty_like(v_in) : at::Tensor();
  at::Tensor h_out = draws_h ? at::empty_like(h_in) : at::Tensor();
  std::vector<uint64_t> keys;
  for (int64_t i = 0; i < k * static_cast<int64_t>(names.size()); ++i) keys.push_back(draw_key(generator));
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "ebm_rbm_sweeps", [&] {
    chunked_sweeps<scalar_t>(Wc, a, b, v_in, h_in, v_out, h_out, names, k, mu, lam, keys);
  });
  return {draws_v ? v_out : v, draws_h ? h_out : h};
}

// One draw of block `name` ("v" or "h") given the other block `x`: rbm_sweeps's chunked
// product and fused draw, one key from the generator. A new (n_chains, n) tensor.
at::Tensor rbm_draw(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b, const std::string& name,
                    const at::Tensor& x, const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam,
                    std::optional<at::Generator> generator) {
  c10::NoGradGuard no_grad;
  TORCH_CHECK(W.scalar_type() == at::kFloat || W.scalar_type() == at::kDouble, "W must be float32 or float64");
  const std::vector<char> names = parse_order({name});
  const at::Tensor Wc = W.contiguous();
  const bool to_h = names[0] == 'h';
  const at::Tensor given = input(x, Wc, to_h ? Wc.size(0) : Wc.size(1), to_h ? "v" : "h");
  at::Tensor v_out = to_h ? at::Tensor() : at::empty({given.size(0), Wc.size(0)}, given.options());
  at::Tensor h_out = to_h ? at::empty({given.size(0), Wc.size(1)}, given.options()) : at::Tensor();
  const std::vector<uint64_t> keys = {draw_key(generator)};
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "ebm_rbm_draw", [&] {
    chunked_sweeps<scalar_t>(Wc, a, b, to_h ? given : at::Tensor(), to_h ? at::Tensor() : given, v_out, h_out, names,
                             1, mu, lam, keys);
  });
  return to_h ? h_out : v_out;
}

// Tests: the rows per chunk of the sweeps for `rows` chains of an n_visible x n_hidden RBM.
int64_t rbm_chunk_rows(int64_t rows, int64_t n_visible, int64_t n_hidden) {
  return chunk_rows(rows, n_visible, n_hidden);
}
