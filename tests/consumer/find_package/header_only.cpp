// A consumer of lskd: the header-only loss, and (with CONSUMER_WITH_C_API) the C library too.
#include <lskd/lskd.hpp>
#ifdef CONSUMER_WITH_C_API
#include <lskd/c_api.h>
#endif

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const int rows = 4, classes = 10;
  std::vector<double> student(rows * classes), teacher(rows * classes);
  for (int i = 0; i < rows * classes; ++i) {
    student[i] = std::sin(0.7 * i);
    teacher[i] = std::cos(0.3 * i) * 2.0;
  }
  std::vector<double> grad(rows * classes);
  const lskd::kd_loss<double> kd;
  const double loss = kd.forward_backward({student.data(), rows, classes},
                                          {teacher.data(), rows, classes},
                                          {grad.data(), rows, classes});
  std::printf("lskd %s, header-only (%s): loss %.17g\n", LSKD_VERSION_STRING, kd.arch_name(),
              loss);
  if (!(loss > 0) || !std::isfinite(loss)) return 1;
#ifdef CONSUMER_WITH_C_API
  double c_loss = 0;
  std::vector<double> c_grad(rows * classes);
  const int code = lskd_kd_f64(student.data(), classes, teacher.data(), classes, rows, classes,
                               nullptr, &c_loss, c_grad.data(), classes, nullptr, 0);
  std::printf("liblskd_c %s (%s): code %d, loss %.17g\n", lskd_version(), lskd_simd_arch(), code,
              c_loss);
  if (code != LSKD_OK || std::fabs(c_loss - loss) > 1e-12 * loss) return 1;
  for (int i = 0; i < rows * classes; ++i) {
    if (std::fabs(c_grad[i] - grad[i]) > 1e-12) return 1;
  }
#endif
  return 0;
}
