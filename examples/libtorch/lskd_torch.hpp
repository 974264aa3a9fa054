// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The lskd KD loss as a libtorch custom autograd function, on CPU tensors' own memory.
///
///   auto loss = lskd_torch::KDLoss::apply(student_logits, teacher_logits, options);
///   loss.backward();
///
/// The forward runs lskd::kd_loss's fused pass, which computes the loss and, for each input
/// that requires grad, its exact gradient; the backward only scales the stored gradients by
/// grad_output. Rows are spread over ATen's thread pool (at::parallel_for) through
/// lskd::execution::parallel_for; the result does not depend on the number of threads.

#include <lskd/kd_loss.hpp>
#include <lskd/options.hpp>

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>

namespace lskd_torch {

namespace detail {

/// A read-only lskd view of a 2-D tensor: its own memory when its rows are contiguous (unit
/// stride along the classes, any row stride), otherwise a contiguous copy kept in `storage`.
template <class T>
lskd::matrix_view<const T> view_of(const torch::Tensor& tensor, torch::Tensor& storage) {
  storage = tensor;
  const bool rows_contiguous = tensor.size(1) <= 1 || tensor.stride(1) == 1;
  const bool rows_apart = tensor.size(0) <= 1 || tensor.stride(0) >= tensor.size(1);
  if (!rows_contiguous || !rows_apart) storage = tensor.contiguous();
  const auto ld = storage.size(0) <= 1 ? storage.size(1) : storage.stride(0);
  return {storage.data_ptr<T>(), static_cast<lskd::index>(storage.size(0)),
          static_cast<lskd::index>(storage.size(1)), static_cast<lskd::index>(ld)};
}

inline void check_logits(const char* name, const torch::Tensor& tensor) {
  TORCH_CHECK(tensor.defined(), "lskd_torch::KDLoss: '", name, "' is undefined");
  TORCH_CHECK(tensor.device().is_cpu(), "lskd_torch::KDLoss: '", name, "' is on ",
              tensor.device(), "; lskd runs on the CPU");
  TORCH_CHECK(tensor.dim() == 2, "lskd_torch::KDLoss: '", name,
              "' must be 2-D (rows x classes), got ", tensor.dim(), "-D");
  TORCH_CHECK(tensor.scalar_type() == torch::kFloat || tensor.scalar_type() == torch::kDouble,
              "lskd_torch::KDLoss: '", name, "' must be float32 or float64, got ",
              tensor.scalar_type());
}

/// Rows in ranges over ATen's intra-op thread pool.
inline lskd::execution aten_threads() {
  lskd::execution how;
  how.parallel_for = [](std::ptrdiff_t count, const std::function<void(std::ptrdiff_t,
                                                                       std::ptrdiff_t)>& body) {
    at::parallel_for(0, count, /*grain_size=*/16,
                     [&body](int64_t begin, int64_t end) { body(begin, end); });
  };
  return how;
}

}  // namespace detail

/// loss = KDLoss::apply(student, teacher, options): student and teacher are rows x classes
/// CPU tensors of one floating dtype (float or double). Returns a 0-dim tensor, or with
/// lskd::reduction::none one loss per row, in the logits' dtype. lskd's errors surface as
/// std::invalid_argument / std::domain_error with messages naming the argument or row.
class KDLoss : public torch::autograd::Function<KDLoss> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, const lskd::kd_options& options) {
    detail::check_logits("student", student);
    detail::check_logits("teacher", teacher);
    TORCH_CHECK(student.scalar_type() == teacher.scalar_type(), "lskd_torch::KDLoss: 'student' is ",
                student.scalar_type(), " but 'teacher' is ", teacher.scalar_type());

    const bool per_row = options.reduction == lskd::reduction::none;
    // Forward receives the original inputs: requires_grad() says which gradients are wanted.
    const bool want_student = student.requires_grad();
    const bool want_teacher = teacher.requires_grad();
    torch::Tensor row_losses = torch::empty({student.size(0)}, torch::kDouble);
    torch::Tensor grad_student, grad_teacher, loss;

    AT_DISPATCH_FLOATING_TYPES(student.scalar_type(), "lskd_torch::KDLoss", [&] {
      torch::Tensor student_storage, teacher_storage;
      const auto student_view = detail::view_of<scalar_t>(student, student_storage);
      const auto teacher_view = detail::view_of<scalar_t>(teacher, teacher_storage);
      const lskd::kd_loss<scalar_t> kd(options, detail::aten_threads());
      double* losses = per_row ? row_losses.data_ptr<double>() : nullptr;
      double total = 0.0;
      if (!want_student && !want_teacher) {
        total = kd.forward(student_view, teacher_view, losses);
      } else {
        lskd::matrix_view<scalar_t> gs, gt;
        if (want_student) {
          grad_student = torch::empty({student.size(0), student.size(1)}, student.options());
          gs = {grad_student.data_ptr<scalar_t>(), student.size(0), student.size(1)};
        }
        if (want_teacher) {
          grad_teacher = torch::empty({teacher.size(0), teacher.size(1)}, teacher.options());
          gt = {grad_teacher.data_ptr<scalar_t>(), teacher.size(0), teacher.size(1)};
        }
        total = kd.forward_backward(student_view, teacher_view, gs, gt, losses);
      }
      loss = per_row ? row_losses.to(student.scalar_type())
                     : torch::scalar_tensor(total, student.options());
    });

    ctx->save_for_backward({grad_student, grad_teacher});
    ctx->saved_data["per_row"] = per_row;
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& grad_output = grad_outputs[0];
    // A row's loss depends on that row's logits only: with per-row losses, each row's gradient
    // is scaled by its own weight.
    const torch::Tensor scale =
        ctx->saved_data["per_row"].toBool() ? grad_output.unsqueeze(1) : grad_output;
    torch::Tensor grad_student = saved[0].defined() ? saved[0] * scale : torch::Tensor();
    torch::Tensor grad_teacher = saved[1].defined() ? saved[1] * scale : torch::Tensor();
    return {grad_student, grad_teacher, torch::Tensor()};  // none for the options
  }
};

}  // namespace lskd_torch
