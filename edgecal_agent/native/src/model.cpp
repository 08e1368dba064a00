#include "model.h"

#include <sys/stat.h>

#include <chrono>
#include <cstring>

#include "errors.h"
#include "pyfmt.h"

namespace edgecal {

namespace {

// Largest image input Mat (bytes) the agent asks ncnn to make.
const int64_t MAX_INPUT_BYTES = int64_t(1) << 31;

int pixel_from_bgr(const std::string& pixel) {
    if (pixel == "RGB") return ncnn::Mat::PIXEL_BGR2RGB;
    if (pixel == "GRAY") return ncnn::Mat::PIXEL_BGR2GRAY;
    if (pixel == "RGBA") return ncnn::Mat::PIXEL_BGR2RGBA;
    if (pixel == "BGRA") return ncnn::Mat::PIXEL_BGR2BGRA;
    return ncnn::Mat::PIXEL_BGR;
}

size_t channels_of(const std::string& pixel) {
    if (pixel == "GRAY") return 1;
    if (pixel == "RGBA" || pixel == "BGRA") return 4;
    return 3;
}

std::string shape_text(const std::vector<int64_t>& shape) {
    std::vector<std::string> s;
    for (int64_t d : shape) s.push_back(std::to_string(d));
    return "(" + join(s, ", ") + (shape.size() == 1 ? ",)" : ")");
}

std::string dtype_name(const ArrayView& a) {
    if (a.kind == 'u' && a.itemsize == 1) return "uint8";
    if (a.kind == 'f' && a.itemsize == 4) return "float32";
    if (a.kind == 'f' && a.itemsize == 8) return "float64";
    if (a.kind == 'i' && a.itemsize == 8) return "int64";
    if (a.kind == 'i' && a.itemsize == 4) return "int32";
    return a.descr;
}

std::string basename_of(const std::string& p) {
    size_t cut = p.rfind('/');
    return cut == std::string::npos ? p : p.substr(cut + 1);
}

// The visited elements of a fp32 Mat with elempack pack (elemsize 4*pack): per channel the
// first w*h*pack floats (for dims <= 2 every element).
void visit_mat(const ncnn::Mat& m, size_t b, const VisitFn& fn) {
    if (m.dims == 0 || m.empty()) {
        fn(b, nullptr, 0);
        return;
    }
    const size_t pack = size_t(m.elempack);
    if (m.dims == 1) {
        fn(b, static_cast<const float*>(m.data), size_t(m.w) * pack);
    } else if (m.dims == 2) {
        fn(b, static_cast<const float*>(m.data), size_t(m.w) * size_t(m.h) * pack);
    } else {
        const size_t per = size_t(m.w) * size_t(m.h) * pack;
        for (int q = 0; q < m.c; ++q) {
            const float* p = reinterpret_cast<const float*>(
                static_cast<const unsigned char*>(m.data) + m.cstep * size_t(q) * m.elemsize);
            fn(b, p, per);
        }
    }
}

}  // namespace

void set_runtime_options(ncnn::Option& opt, const std::string& runtime, int threads) {
    if (runtime == "calibration") {
        opt.num_threads = 1;
        opt.lightmode = false;
        opt.use_fp16_packed = false;
        opt.use_fp16_storage = false;
        opt.use_fp16_arithmetic = false;
        opt.use_bf16_packed = false;
        opt.use_bf16_storage = false;
    } else {
        opt.num_threads = threads;
    }
}

ncnn::Mat to_mat(const ArrayView& arr, const InputDesc& desc, const std::string& where) {
    if (desc.kind == "image") {
        if (!(arr.kind == 'u' && arr.itemsize == 1) || arr.shape.size() != 3 || arr.shape[2] != 3) {
            throw InputError(where + ": image input " + py_repr(desc.blob) +
                             " must be uint8 (rows, cols, 3) BGR, got " + dtype_name(arr) + " " +
                             shape_text(arr.shape));
        }
        const int64_t rows = arr.shape[0], cols = arr.shape[1];
        auto [w, h] = desc.target_size(cols, rows);
        if (w <= 0 || h <= 0) {
            throw InputError(where + ": input " + py_repr(desc.blob) + " resizes " +
                             std::to_string(cols) + "x" + std::to_string(rows) + " to " +
                             std::to_string(w) + "x" + std::to_string(h));
        }
        const size_t n_ch = channels_of(desc.pixel);
        if (w * h > MAX_INPUT_BYTES / 12 + 1 || w * h * 3 * 4 > MAX_INPUT_BYTES) {
            throw InputError(where + ": input " + py_repr(desc.blob) + " resizes " +
                             std::to_string(cols) + "x" + std::to_string(rows) + " to " +
                             std::to_string(w) + "x" + std::to_string(h) + ", more than " +
                             std::to_string(MAX_INPUT_BYTES >> 30) + " GiB of float32 pixels");
        }
        const std::pair<const char*, const std::vector<double>*> lists[] = {
            {"mean", &desc.mean}, {"norm", &desc.norm}};
        for (const auto& [what, values] : lists) {
            if (!values->empty() && values->size() != n_ch) {
                throw InputError("input " + py_repr(desc.blob) + ": " +
                                 std::to_string(values->size()) + " " + what + " values for " +
                                 std::to_string(n_ch) + " channels of pixel=" + desc.pixel);
            }
        }
        ncnn::Mat mat = ncnn::Mat::from_pixels_resize(arr.data, pixel_from_bgr(desc.pixel),
                                                      int(cols), int(rows), int(w), int(h));
        std::vector<float> mean(desc.mean.begin(), desc.mean.end());
        std::vector<float> norm(desc.norm.begin(), desc.norm.end());
        mat.substract_mean_normalize(mean.empty() ? nullptr : mean.data(),
                                     norm.empty() ? nullptr : norm.data());
        return mat;
    }
    if (!(arr.kind == 'f' && arr.itemsize == 4)) {
        throw InputError(where + ": npy input " + py_repr(desc.blob) + " must be float32, got " +
                         dtype_name(arr));
    }
    if (!desc.shape.empty()) {
        std::vector<int64_t> expected(desc.shape.rbegin(), desc.shape.rend());
        if (arr.shape != expected) {
            std::vector<std::string> sh;
            for (int64_t d : desc.shape) sh.push_back(std::to_string(d));
            throw InputError(where + ": npy input " + py_repr(desc.blob) + " has numpy shape " +
                             shape_text(arr.shape) + ", expected " + shape_text(expected) +
                             " (shape=[" + join(sh, ", ") + "] is ncnn's w,h,(d),c order)");
        }
    }
    const size_t nd = arr.shape.size();
    if (nd < 1 || nd > 4) {
        throw InputError(where + ": npy input " + py_repr(desc.blob) + " has " +
                         std::to_string(nd) + " dimensions (1..4)");
    }
    const auto& s = arr.shape;
    ncnn::Mat mat;
    if (nd == 1) mat.create(int(s[0]), size_t(4));
    if (nd == 2) mat.create(int(s[1]), int(s[0]), size_t(4));
    if (nd == 3) mat.create(int(s[2]), int(s[1]), int(s[0]), size_t(4));
    if (nd == 4) mat.create(int(s[3]), int(s[2]), int(s[1]), int(s[0]), size_t(4));
    if (arr.count() == 0) return mat;
    if (mat.empty()) throw std::bad_alloc();
    const float* src = reinterpret_cast<const float*>(arr.data);
    if (nd <= 2) {
        std::memcpy(mat.data, src, arr.count() * 4);
    } else {
        const size_t per = size_t(mat.w) * size_t(mat.h) * size_t(mat.d);
        for (int q = 0; q < mat.c; ++q) {
            std::memcpy(mat.channel(q).data, src + per * size_t(q), per * 4);
        }
    }
    return mat;
}

std::pair<std::vector<int64_t>, std::vector<float>> mat_to_array(const ncnn::Mat& blob) {
    std::vector<int64_t> shape;
    std::vector<float> values;
    if (blob.dims == 0) return {{0}, values};
    // extract(type 0) casts an int8 blob (a requantizing layer's top) to fp32 only when no
    // fp16/bf16 storage branch is taken first: on ARM with fp16 storage (the deployed runtime)
    // the int8 codes come back as they are; the Python wheel's buffer gives them as int8 too
    ncnn::Mat m = blob;
    if (blob.elembits() == 8) ncnn::cast_int8_to_float32(blob, m);
    if (m.dims == 1) shape = {m.w};
    if (m.dims == 2) shape = {m.h, m.w};
    if (m.dims == 3) shape = {m.c, m.h, m.w};
    if (m.dims == 4) shape = {m.c, m.d, m.h, m.w};
    const size_t per = size_t(m.w) * size_t(m.h) * size_t(m.d);
    auto append = [&](const void* data, size_t n) {
        const float* f = static_cast<const float*>(data);
        values.insert(values.end(), f, f + n);
    };
    if (m.dims <= 2) {
        append(m.data, size_t(m.w) * size_t(m.h));
    } else {
        values.reserve(per * size_t(m.c));
        for (int q = 0; q < m.c; ++q) append(m.channel(q).data, per);
    }
    return {shape, values};
}

NcnnModel::NcnnModel(const std::string& param, const std::string& bin, const std::string& runtime,
                     int threads, const std::string& label_param, const std::string& label_bin)
    : param_label(label_param), raw_extract_(runtime == "calibration") {
    const std::pair<const std::string*, const std::string*> files[] = {{&param, &label_param},
                                                                       {&bin, &label_bin}};
    for (const auto& [path, label] : files) {
        struct stat st;
        if (::stat(path->c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
            throw ModelLoadError("model file " + *label + " does not exist on the device");
        }
    }
    set_runtime_options(net.opt, runtime, threads);
    const std::string name_param = basename_of(label_param), name_bin = basename_of(label_bin);
    if (net.load_param(param.c_str()) != 0) {
        throw ModelLoadError("ncnn cannot parse " + name_param + " (load_param failed)");
    }
    if (net.load_model(bin.c_str()) != 0) {
        throw ModelLoadError("ncnn cannot load " + name_bin + " for " + name_param +
                             " (load_model failed: truncated .bin or .param/.bin mismatch)");
    }
    for (const auto& b : net.blobs()) blob_names.push_back(b.name);
    for (size_t i = 0; i < blob_names.size(); ++i) blob_index_.emplace(blob_names[i], int(i));
}

NcnnModel::~NcnnModel() { net.clear(); }

std::string NcnnModel::producer(const std::string& blob) const {
    for (size_t i = 0; i < blob_names.size(); ++i) {
        if (blob_names[i] != blob) continue;
        for (const ncnn::Layer* layer : net.layers()) {
            for (int top : layer->tops) {
                if (size_t(top) == i) return "layer " + py_repr(layer->name) + " (" + layer->type + ")";
            }
        }
        break;
    }
    return "";
}

JobError NcnnModel::extract_error(const std::string& where, const std::string& blob, int ret) const {
    const std::string made_by = producer(blob);
    const std::string why =
        ret == -100 ? " (-100: ncnn could not allocate a blob: a layer's output is too large for "
                      "this device -- check that layer's shape parameters and --shape)"
                    : "";
    return ExtractError(where + ": ncnn could not compute blob " + py_repr(blob) + " of " +
                        basename_of(param_label) +
                        (made_by.empty() ? "" : ", the output of " + made_by + " or a layer before it") +
                        ": extract returned " + std::to_string(ret) + why);
}

void NcnnModel::check_blobs(const std::vector<std::string>& blobs) const {
    std::vector<std::string> missing;
    for (const auto& b : blobs) {
        bool found = false;
        for (const auto& n : blob_names) found = found || n == b;
        if (!found) missing.push_back(py_repr(b));
    }
    if (!missing.empty()) {
        throw BlobNotFound("blob(s) " + join(missing, ", ") + " not in the model; it has " +
                           join(blob_names, ", "));
    }
}

void NcnnModel::check_inputs(const std::vector<InputDesc>& inputs) const {
    std::vector<std::string> names;
    for (const auto& d : inputs) names.push_back(d.blob);
    check_blobs(names);
}

void NcnnModel::feed(ncnn::Extractor& ex, std::vector<ncnn::Mat>& mats, const Sample& sample,
                     const std::vector<InputDesc>& inputs, const std::string& where,
                     bool light_mode) {
    ex.set_light_mode(light_mode);
    ex.set_blob_allocator(&blob_allocator_);
    ex.set_workspace_allocator(&workspace_allocator_);
    for (size_t j = 0; j < inputs.size() && j < sample.size(); ++j) {
        mats.push_back(to_mat(sample[j], inputs[j], where));
    }
    for (size_t j = 0; j < mats.size(); ++j) ex.input(inputs[j].blob.c_str(), mats[j]);
}

std::vector<ncnn::Mat> NcnnModel::extract(const Sample& sample,
                                          const std::vector<InputDesc>& inputs,
                                          const std::vector<std::string>& blobs,
                                          const std::string& where, bool light_mode) {
    std::vector<ncnn::Mat> mats;
    std::vector<ncnn::Mat> outs;
    {
        ncnn::Extractor ex = net.create_extractor();
        feed(ex, mats, sample, inputs, where, light_mode);
        for (const auto& name : blobs) {
            ncnn::Mat out;
            int ret = ex.extract(name.c_str(), out, 0);
            if (ret != 0) throw extract_error(where, name, ret);
            outs.push_back(out.clone());
        }
    }
    return outs;
}

double NcnnModel::time_extract(const Sample& sample, const std::vector<InputDesc>& inputs,
                               const std::string& blob, const std::string& where, bool keep,
                               ncnn::Mat* out) {
    std::vector<ncnn::Mat> mats;
    ncnn::Extractor ex = net.create_extractor();
    feed(ex, mats, sample, inputs, where, true);
    ncnn::Mat got;
    auto t0 = std::chrono::steady_clock::now();
    int ret = ex.extract(blob.c_str(), got, 0);
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (ret != 0) throw extract_error(where, blob, ret);
    if (keep && out) *out = got.clone();
    return elapsed;
}

void NcnnModel::kept(const Sample& sample, const std::vector<InputDesc>& inputs,
                     const std::string& where, const std::function<void(ncnn::Extractor&)>& fn) {
    std::vector<ncnn::Mat> mats;
    ncnn::Extractor ex = net.create_extractor();
    feed(ex, mats, sample, inputs, where, false);
    fn(ex);
}

ncnn::Mat NcnnModel::raw_blob(ncnn::Extractor& ex, const std::string& name,
                              const std::string& where) const {
    ncnn::Mat out;
    int ret = ex.extract(name.c_str(), out, 1);
    if (ret != 0) throw extract_error(where, name, ret);
    return out;
}

void NcnnModel::extract_fed(const std::vector<std::pair<std::string, ncnn::Mat>>& fed,
                            const std::vector<std::string>& blobs, const std::string& where,
                            const std::function<void(size_t, const ncnn::Mat&)>& fn) {
    ncnn::Extractor ex = net.create_extractor();
    ex.set_light_mode(true);
    ex.set_blob_allocator(&blob_allocator_);
    ex.set_workspace_allocator(&workspace_allocator_);
    for (const auto& [name, mat] : fed) ex.input(name.c_str(), mat);
    for (size_t b = 0; b < blobs.size(); ++b) {
        ncnn::Mat out;
        int ret = ex.extract(blobs[b].c_str(), out, 0);
        if (ret != 0) throw extract_error(where, blobs[b], ret);
        fn(b, out);
    }
}

ncnn::Mat NcnnModel::extract_one(ncnn::Extractor& ex, const std::string& blob,
                                 const std::string& where) {
    const auto found = blob_index_.find(blob);
    const int index = found == blob_index_.end() ? -1 : found->second;
    auto extract = [&](ncnn::Mat& out, int type) {
        return index >= 0 ? ex.extract(index, out, type) : ex.extract(blob.c_str(), out, type);
    };
    int ret = 0;
    if (raw_extract_) {
        ncnn::Mat out;
        ret = extract(out, 1);
        if (ret == 0 && (out.dims == 0 || out.elemsize == size_t(4) * size_t(out.elempack))) {
            return out;
        }
    }
    ncnn::Mat out;
    ret = extract(out, 0);
    if (ret != 0) throw extract_error(where, blob, ret);
    return out;  // dims 0 or no element: visit_blob hands out (nullptr, 0)
}

void NcnnModel::visit_blob(const ncnn::Mat& m, size_t b, const VisitFn& fn) { visit_mat(m, b, fn); }

void NcnnModel::for_each_visited(const Sample& sample, const std::vector<InputDesc>& inputs,
                                 const std::vector<std::string>& blobs, const VisitFn& fn,
                                 const std::string& where) {
    std::vector<ncnn::Mat> mats;
    ncnn::Extractor ex = net.create_extractor();
    feed(ex, mats, sample, inputs, where, true);
    for (size_t b = 0; b < blobs.size(); ++b) {
        ncnn::Mat out = extract_one(ex, blobs[b], where);
        visit_mat(out, b, fn);
    }
}

std::vector<ncnn::Mat> NcnnModel::extract_visitable(const Sample& sample,
                                                    const std::vector<InputDesc>& inputs,
                                                    const std::vector<std::string>& blobs,
                                                    const std::string& where) {
    std::vector<ncnn::Mat> mats;
    std::vector<ncnn::Mat> outs;
    ncnn::Extractor ex = net.create_extractor();
    feed(ex, mats, sample, inputs, where, true);
    for (const auto& name : blobs) outs.push_back(extract_one(ex, name, where));
    return outs;
}

}  // namespace edgecal
