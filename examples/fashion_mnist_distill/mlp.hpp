// A plain multilayer perceptron (dense layers, ReLU between them) trained with SGD + momentum.
// Batches are row-major Eigen matrices, one example per row; products go through Eigen's GEMM.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "random.hpp"

namespace fmd {

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using row_vector = Eigen::Matrix<float, 1, Eigen::Dynamic>;

/// One dense layer: y = x * weight + bias, with its gradients and momentum buffers.
struct dense_layer {
  matrix weight;  // inputs x outputs
  row_vector bias;
  matrix grad_weight;
  row_vector grad_bias;
  matrix velocity_weight;
  row_vector velocity_bias;
};

/// He-uniform initialization: U(-sqrt(6 / fan_in), sqrt(6 / fan_in)), zero biases.
inline dense_layer make_dense_layer(int inputs, int outputs, std::mt19937_64& rng) {
  dense_layer layer;
  const double bound = std::sqrt(6.0 / inputs);
  layer.weight.resize(inputs, outputs);
  for (Eigen::Index i = 0; i < layer.weight.size(); ++i) {
    layer.weight.data()[i] = static_cast<float>((2.0 * uniform01(rng) - 1.0) * bound);
  }
  layer.bias = row_vector::Zero(outputs);
  layer.grad_weight = matrix::Zero(inputs, outputs);
  layer.grad_bias = row_vector::Zero(outputs);
  layer.velocity_weight = matrix::Zero(inputs, outputs);
  layer.velocity_bias = row_vector::Zero(outputs);
  return layer;
}

/// Multilayer perceptron with ReLU hidden layers and linear output logits.
class mlp {
 public:
  /// `sizes` lists every layer width, input first and classes last, e.g. {784, 32, 10}.
  mlp(const std::vector<int>& sizes, std::uint64_t seed) {
    if (sizes.size() < 2) throw std::invalid_argument("an MLP needs at least two layer sizes");
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
      layers_.push_back(make_dense_layer(sizes[i], sizes[i + 1], rng));
    }
    activations_.resize(layers_.size());
  }

  /// Training forward pass; keeps the activations for backward(). `input` must outlive it.
  const matrix& forward(const matrix& input) {
    input_ = &input;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const matrix& x = l == 0 ? input : activations_[l - 1];
      apply_layer(l, x, activations_[l]);
    }
    return activations_.back();
  }

  /// Back-propagates d(loss)/d(logits) of the last forward() into the layer gradients.
  void backward(const matrix& grad_logits) {
    grad_ = grad_logits;
    for (std::size_t l = layers_.size(); l-- > 0;) {
      const matrix& x = l == 0 ? *input_ : activations_[l - 1];
      dense_layer& layer = layers_[l];
      layer.grad_weight.noalias() = x.transpose() * grad_;
      layer.grad_bias = grad_.colwise().sum();
      if (l == 0) break;  // no gradient is needed for the input pixels
      grad_prev_.noalias() = grad_ * layer.weight.transpose();
      grad_ = (x.array() > 0.0f).select(grad_prev_.array(), 0.0f).matrix();
    }
  }

  /// Heavy-ball momentum step: v = momentum * v + g; w -= lr * v.
  void sgd_step(float lr, float momentum) {
    for (dense_layer& layer : layers_) {
      layer.velocity_weight = momentum * layer.velocity_weight + layer.grad_weight;
      layer.velocity_bias = momentum * layer.velocity_bias + layer.grad_bias;
      layer.weight -= lr * layer.velocity_weight;
      layer.bias -= lr * layer.velocity_bias;
    }
  }

  /// Number of weights and biases.
  Eigen::Index parameter_count() const {
    Eigen::Index count = 0;
    for (const dense_layer& layer : layers_) count += layer.weight.size() + layer.bias.size();
    return count;
  }

  /// Inference on `input`, processed in chunks of rows to bound the memory of activations.
  matrix predict(const matrix& input, Eigen::Index chunk_rows = 2000) const {
    matrix logits(input.rows(), layers_.back().weight.cols());
    matrix chunk, next;
    for (Eigen::Index start = 0; start < input.rows(); start += chunk_rows) {
      const Eigen::Index rows = std::min(chunk_rows, input.rows() - start);
      chunk = input.middleRows(start, rows);
      for (std::size_t l = 0; l < layers_.size(); ++l) {
        apply_layer(l, chunk, next);
        chunk.swap(next);
      }
      logits.middleRows(start, rows) = chunk;
    }
    return logits;
  }

 private:
  /// out = x * W + b, followed by ReLU unless `l` is the output layer.
  void apply_layer(std::size_t l, const matrix& x, matrix& out) const {
    const dense_layer& layer = layers_[l];
    out.noalias() = x * layer.weight;
    out.rowwise() += layer.bias;
    if (l + 1 < layers_.size()) out = out.cwiseMax(0.0f);
  }

  std::vector<dense_layer> layers_;
  std::vector<matrix> activations_;
  const matrix* input_ = nullptr;
  matrix grad_;
  matrix grad_prev_;
};

}  // namespace fmd
