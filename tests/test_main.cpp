#define BOOST_TEST_MODULE peft
#include <boost/test/unit_test.hpp>
