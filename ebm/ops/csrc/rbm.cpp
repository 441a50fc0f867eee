// The RBM's training gradient by matrix products (ebm/training/rbm_step.py has the math):
// the same ATen ops as its eager path, called from C++ so that a small model's update does
// not pay Python's dispatch per op (~14 ops).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <optional>
#include <string>
#include <vector>

// bernoulli.cpp
at::Tensor sigmoid_bernoulli_(at::Tensor logits, std::optional<at::Generator> generator);

// Returns {loss, dW, da, db}: the surrogate mean F(v_data) - mean F(v_model) and its gradient.
// mu, lam: the centered RBM's offsets (both or neither).
std::vector<at::Tensor> rbm_gradient(const at::Tensor& W, const at::Tensor& a, const at::Tensor& b,
                                     const at::Tensor& v_data, const at::Tensor& v_model,
                                     const std::optional<at::Tensor>& mu, const std::optional<at::Tensor>& lam) {
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
