// The fused sigmoid + exact Bernoulli draw over a span of a tensor (bernoulli.cpp), for the
// RBM sweeps (rbm.cpp), which run it on their own chunks of rows inside one parallel region.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

// One 64-bit key from the caller's generator (the default CPU generator when none).
uint64_t draw_key(std::optional<at::Generator> generator);

// Units [begin, end) of the row-major (rows, n_cols) logits at `p` (flat indices, any span)
// become exact Bernoulli(sigmoid(logit + bias[col])) draws, with the random bits of `key`:
// the same draws as sigmoid_bernoulli_ of the whole tensor with that key, whatever the span.
// `tile` (n_cols + 256 values): the bias repeated, tile[i] = bias[i % n_cols]; null: no bias.
void sigmoid_draw_span(float* p, int64_t begin, int64_t end, uint64_t key, const float* tile, int64_t n_cols);
void sigmoid_draw_span(double* p, int64_t begin, int64_t end, uint64_t key, const double* tile, int64_t n_cols);

// Units per block of random bits (a span's bias tile needs n_cols + kDrawBlock values).
constexpr int64_t kDrawBlock = 256;
