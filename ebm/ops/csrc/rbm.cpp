// The RBM's training gradient by matrix products (ebm/training/rbm_step.py has the math):
// the same ATen ops as its eager path, called from C++ so that a small model's update does
// not pay Python's dispatch per op (~14 ops).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "fastmath.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

// bernoulli.cpp
at::Tensor sigmoid_bernoulli_(at::Tensor logits, std::optional<at::Generator> generator);

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

// k Gibbs sweeps of the (centered) RBM, each block of `order` ("v", "h") drawn in turn:
// the product into a new tensor, then the fused sigmoid + exact draw in place. The same ops
// and the same generator draws, in the same order, as `RBM.draw_conditional` once per block
// and sweep, so the chains are the same as those of k Python-level sweeps; only the
// per-sweep dispatch from Python is saved. Returns the final {v, h} (new tensors when drawn).
std::vector<at::Tensor> rbm_sweeps(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b, at::Tensor v,
                                   at::Tensor h, const std::vector<std::string>& order, int64_t k,
                                   const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam,
                                   std::optional<at::Generator> generator) {
  c10::NoGradGuard no_grad;
  TORCH_CHECK(k >= 0, "k must be >= 0");
  for (const std::string& name : order) TORCH_CHECK(name == "v" || name == "h", "the RBM has no block '", name, "'");
  const at::Tensor Wt = W.t();
  // A block's first draw goes to a new tensor (the caller's are never written); later sweeps
  // overwrite it in place: its old value is no longer needed once the other block is drawn
  // from it, and a block is never written while it is the product's input.
  bool v_own = false, h_own = false;
  for (int64_t sweep = 0; sweep < k; ++sweep) {
    for (const std::string& name : order) {
      if (name == "h") {
        const at::Tensor x = mu.has_value() ? v - *mu : v;
        h = h_own ? at::addmm_out(h, b, x, W) : at::addmm(b, x, W);
        h_own = true;
        sigmoid_bernoulli_(h, generator);
      } else {
        const at::Tensor x = lam.has_value() ? h - *lam : h;
        v = v_own ? at::addmm_out(v, a, x, Wt) : at::addmm(a, x, Wt);
        v_own = true;
        sigmoid_bernoulli_(v, generator);
      }
    }
  }
  return {v, h};
}
