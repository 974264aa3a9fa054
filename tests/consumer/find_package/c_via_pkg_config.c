/* A C program built with the flags of lskd.pc alone. */
#include <lskd/c_api.h>

#include <stdio.h>

int main(void) {
  const float student[6] = {1, 2, 3, 3, 2, 1};
  const float teacher[6] = {0, 1, 4, 1, 1, 0};
  float grad[6];
  double loss = 0;
  lskd_kd_options options;
  lskd_kd_options_init(&options);
  const int code = lskd_kd_f32(student, 3, teacher, 3, 2, 3, &options, &loss, grad, 3, NULL, 0);
  printf("liblskd_c %s (%s): code %d, loss %.9g\n", lskd_version(), lskd_simd_arch(), code, loss);
  return code == LSKD_OK && loss > 0 ? 0 : 1;
}
