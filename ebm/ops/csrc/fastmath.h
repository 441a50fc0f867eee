// Branch-free float32 exp that the compiler vectorises (libm's expf is a call per element).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// e^t for t in [-87.3, 88.7] by Cephes' expf: range reduction by ln 2 in two parts, a degree-6
// polynomial, 2^n (n in [-126, 128]) by the exponent bits: within 2 ulp of the true value
// where that is below FLT_MAX, +inf from t ~ 88.38 on (n = 128). NaN stays NaN.
inline float exp_clamped(float t) {
  const float n = std::floor(t * 1.44269504088896341f + 0.5f);
  t = t - n * 0.693359375f + n * 2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * t + 1.3981999507e-3f;
  poly = poly * t + 8.3334519073e-3f;
  poly = poly * t + 4.1665795894e-2f;
  poly = poly * t + 1.6666665459e-1f;
  poly = poly * t + 5.0000001201e-1f;
  const float e = poly * t * t + t + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}
