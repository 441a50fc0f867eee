// The RBM's training gradient by matrix products (ebm/training/rbm_step.py has the math):
// the same ATen ops as its eager path, called from C++ so that a small model's update does
// not pay Python's dispatch per op (~14 ops).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <optional>
#include <vector>

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
