// ncnn, driven exactly as ncnn2table drives it (backend.py): runtime options, input Mats,
// extraction, and the elements ncnn2table visits.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <allocator.h>
#include <mat.h>
#include <net.h>

#include "messages.h"
#include "errors.h"
#include "shards.h"

namespace edgecal {

// calibration: ncnn2table's QuantNet options; deployed: ncnn defaults + threads.
void set_runtime_options(ncnn::Option& opt, const std::string& runtime, int threads);
// One input array -> the owning Mat ncnn2table would feed; InputError.
ncnn::Mat to_mat(const ArrayView& arr, const InputDesc& desc, const std::string& where);
// A fp32 (or int8: cast to fp32) elempack-1 Mat as a C-order array: (shape as numpy gives it,
// floats).
std::pair<std::vector<int64_t>, std::vector<float>> mat_to_array(const ncnn::Mat& m);

// Called with blob index b and the visited floats of that blob, as chunks: fn(b, p, n, last).
using VisitFn = std::function<void(size_t b, const float* p, size_t n)>;

class NcnnModel {
public:
    // param/bin: paths ncnn opens; labels: how messages name them.  ModelLoadError.
    NcnnModel(const std::string& param, const std::string& bin, const std::string& runtime,
              int threads, const std::string& label_param, const std::string& label_bin);
    ~NcnnModel();

    void check_blobs(const std::vector<std::string>& blobs) const;
    void check_inputs(const std::vector<InputDesc>& inputs) const;
    // Feed one sample, extract blobs in order (fp32, elempack 1); light_mode as ncnn2table
    // (true) or false for an arbitrary order.  ExtractError.
    std::vector<ncnn::Mat> extract(const Sample& sample, const std::vector<InputDesc>& inputs,
                                   const std::vector<std::string>& blobs, const std::string& where,
                                   bool light_mode);
    // Seconds a fresh light-mode extractor takes to compute blob (the extract call only);
    // with keep, also its values.
    double time_extract(const Sample& sample, const std::vector<InputDesc>& inputs,
                        const std::string& blob, const std::string& where, bool keep,
                        ncnn::Mat* out);
    // An extractor fed one sample that keeps every blob it computes (not light mode), handed
    // to fn for raw_blob; it and its input Mats live until fn returns.  InputError.
    void kept(const Sample& sample, const std::vector<InputDesc>& inputs,
              const std::string& where, const std::function<void(ncnn::Extractor&)>& fn);
    // Blob name of ex as ncnn holds it (extract type 1: its packing, its fp16/bf16 storage,
    // its int8 codes), shared with ex, for extract_fed.  ExtractError.
    ncnn::Mat raw_blob(ncnn::Extractor& ex, const std::string& name, const std::string& where) const;
    // A fresh light-mode extractor given the Mats fed (blob name, Mat: e.g. another net's
    // raw_blob) instead of a sample; fn(b, Mat) for each of blobs in order (fp32, elempack 1).
    // ncnn computes only the layers between the fed blobs and blobs; a layer working in place
    // copies a fed blob first (it is shared).  ExtractError.
    void extract_fed(const std::vector<std::pair<std::string, ncnn::Mat>>& fed,
                     const std::vector<std::string>& blobs, const std::string& where,
                     const std::function<void(size_t, const ncnn::Mat&)>& fn);
    // Feed one sample (light mode, blobs in network order); fn(b, values, count) for each
    // blob with the elements ncnn2table visits (stats.visited semantics, any order): each
    // channel's first w*h floats (dims 4: the first depth slice), read in place from the raw
    // packed blob under the calibration runtime.  The count of the blob's visited elements is
    // the sum of its chunks.
    void for_each_visited(const Sample& sample, const std::vector<InputDesc>& inputs,
                          const std::vector<std::string>& blobs, const VisitFn& fn,
                          const std::string& where);

    // The same blobs as for_each_visited, all extracted first and held (raw packed under the
    // calibration runtime): visit_blob hands out each one's visited elements.  ncnn copies a
    // held blob before an in-place layer writes it, so the Mats stay intact; release them on
    // this thread (the blob allocator is not locked).  ExtractError.
    std::vector<ncnn::Mat> extract_visitable(const Sample& sample,
                                             const std::vector<InputDesc>& inputs,
                                             const std::vector<std::string>& blobs,
                                             const std::string& where);
    // fn(b, values, count) over the visited elements of m (one of extract_visitable's Mats).
    static void visit_blob(const ncnn::Mat& m, size_t b, const VisitFn& fn);

    ncnn::Net net;
    std::vector<std::string> blob_names;
    std::string param_label;

private:
    JobError extract_error(const std::string& where, const std::string& blob, int ret) const;
    // blob name of ex as the Mat visit_blob reads (raw when the runtime allows); ExtractError.
    ncnn::Mat extract_one(ncnn::Extractor& ex, const std::string& name, const std::string& where);
    std::string producer(const std::string& blob) const;
    void feed(ncnn::Extractor& ex, std::vector<ncnn::Mat>& mats, const Sample& sample,
              const std::vector<InputDesc>& inputs, const std::string& where, bool light_mode);
    ncnn::UnlockedPoolAllocator blob_allocator_;
    ncnn::PoolAllocator workspace_allocator_;
    bool raw_extract_;
    // blob name -> its index in net (the first blob of that name, as ncnn's lookup finds it):
    // every sample extracts each blob by index, not by a search over the names
    std::unordered_map<std::string, int> blob_index_;
};

}  // namespace edgecal
