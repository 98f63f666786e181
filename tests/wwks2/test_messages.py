"""Typed messages: decoding with clear errors, encoding in the exact spellings, echoes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date

import pytest

from dispenser.wwks2.errors import DataError, NotSupportedError
from dispenser.wwks2.messages import (
    Article,
    ArticleMasterSetRequest,
    OutputDetails,
    OutputRequest,
    OutputResponse,
    Pack,
    StatusRequest,
    StockInfoResponse,
    decode_message,
    encode_message,
)
from dispenser.wwks2.model import decode, encode
from dispenser.wwks2.xmlio import parse_envelope

# From a real 2024 trace: what the pharmacy client library sends.
SDK_OUTPUT = (b'<WWKS Version="2.0" TimeStamp="2024-11-26T16:28:21Z"><OutputRequest Id="688" '
              b'Source="100" Destination="777"><Details Priority="Normal" OutputDestination="2" '
              b'OutputPoint="0" /><Criteria ArticleId="1690510" Quantity="1" SubItemQuantity="0" '
              b'PackId="0" SingleBatchNumber="False" /></OutputRequest></WWKS>')


def lead(xml: str) -> ET.Element:
    return parse_envelope(f'<WWKS Version="2.0">{xml}</WWKS>'.encode())


def test_the_sdk_output_request_decodes_and_echoes_unchanged() -> None:
    request = decode_message(parse_envelope(SDK_OUTPUT))
    assert isinstance(request, OutputRequest)
    assert request.details == OutputDetails(priority="Normal", output_destination=2,
                                            output_point=0)
    criteria = request.criteria[0]
    assert (criteria.article_id, criteria.quantity, criteria.pack_id,
            criteria.single_batch_number) == ("1690510", 1, 0, False)
    echo = OutputResponse(id=request.id, source=777, destination=100,
                          details=OutputDetails(priority="Normal", output_destination=2,
                                                output_point=0, status="Queued"),
                          criteria=request.criteria)
    assert b'<Criteria ArticleId="1690510" Quantity="1" SubItemQuantity="0" ' \
           b'SingleBatchNumber="False" PackId="0" />' in encode_message(echo)


@pytest.mark.parametrize("spelling", ["true", "True", "TRUE", "1"])
def test_booleans_are_read_in_any_case(spelling: str) -> None:
    message = decode_message(lead(f'<StatusRequest Id="5" Source="100" Destination="999" '
                                  f'IncludeDetails="{spelling}"/>'))
    assert message == StatusRequest(id="5", source=100, destination=999, include_details=True)


@pytest.mark.parametrize(("xml", "problem"), [
    ('<StatusRequest Source="100"/>', "StatusRequest@Id is missing"),
    ('<StatusRequest Id="1" Source="IMS"/>', "StatusRequest@Source: 'IMS' is not an integer"),
    ('<StatusRequest Id="1" IncludeDetails="yes"/>', "is not a boolean"),
    ('<OutputRequest Id="2"><Details OutputDestination="1"/><Criteria ArticleId="A" '
     'Quantity="1"/><Criteria ArticleId="B" Quantity="two"/></OutputRequest>',
     r"OutputRequest/Criteria\[2\]@Quantity: 'two' is not an integer"),
    ('<OutputRequest Id="2"><Criteria ArticleId="A" Quantity="1"/></OutputRequest>',
     "OutputRequest/Details is missing"),
    ('<OutputRequest Id="2"><Details OutputDestination="1" Priority="Urgent"/></OutputRequest>',
     "'Urgent' is not one of Lowest, Low, Normal, High, Highest"),
    ('<OutputRequest Id="2"><Details OutputDestination="1"/><Criteria ArticleId="A" '
     'Quantity="1" MinimumExpiryDate="31.03.2027"/></OutputRequest>', "is not a date"),
    ('<OutputRequest Id="2"><Details OutputDestination="1"/><Criteria ArticleId="A" '
     'Quantity="-1"/></OutputRequest>', "out of range"),
])
def test_data_errors_name_the_element_and_attribute(xml: str, problem: str) -> None:
    with pytest.raises(DataError, match=problem) as caught:
        decode_message(lead(xml))
    assert caught.value.reason == "DataError"


def test_the_message_id_comes_with_a_data_error() -> None:
    with pytest.raises(DataError) as caught:
        decode_message(lead('<StatusRequest Id="77" Source="x"/>'))
    assert (caught.value.message_id, caught.value.lead) == ("77", "StatusRequest")


@pytest.mark.parametrize(("xml", "problem"), [
    ('<StockDeliverySetRequest Id="1"/>', "not a message this storage system supports"),
    ('<OutputMessage Id="1"><Details OutputDestination="1"/></OutputMessage>',
     "sent by a storage system, not to it"),
])
def test_what_a_storage_system_does_not_take(xml: str, problem: str) -> None:
    with pytest.raises(NotSupportedError, match=problem):
        decode_message(lead(xml))


def test_enumerations_are_read_in_any_case_and_written_exactly() -> None:
    details = decode(OutputDetails, ET.fromstring('<Details Priority="high" '
                                                  'OutputDestination="1"/>'))
    assert details.priority == "High"
    assert encode(details).get("Priority") == "High"


def test_the_article_master_accepts_both_spellings_of_packaging_unit() -> None:
    message = decode_message(lead(
        '<ArticleMasterSetRequest Id="41" Source="100" Destination="999">'
        '<Article Id="A1" Name="Metformin" PackingUnit="60"/>'
        '<Article Id="A2" Name="Insulin" PackagingUnit="5" RequiresFridge="true"/>'
        '</ArticleMasterSetRequest>'))
    assert isinstance(message, ArticleMasterSetRequest)
    assert [a.packaging_unit for a in message.articles] == ["60", "5"]
    assert message.articles[1].requires_fridge is True


def test_empty_optional_values_read_as_not_set() -> None:
    pack = decode(Pack, ET.fromstring('<Pack Id="" ExpiryDate="" BatchNumber="" State=""/>'))
    assert (pack.id, pack.expiry_date, pack.state) == (None, None, None)
    assert pack.batch_number == ""  # text stays exactly as received


def test_stock_response_spellings() -> None:
    response = StockInfoResponse(id="9", source=999, destination=100, articles=(Article(
        id="A1", quantity=1, packs=(Pack(id=501, batch_number="B7",
                                         expiry_date=date(2027, 3, 31),
                                         scan_code="0104150123456789\\x1D10B7",
                                         state="NotAvailable", is_in_fridge=False),)),))
    data = encode_message(response)
    assert b'<Article Id="A1" Quantity="1"><Pack Id="501" BatchNumber="B7" ' \
           b'ExpiryDate="2027-03-31" ScanCode="0104150123456789\\x1D10B7" ' \
           b'State="NotAvailable" IsInFridge="False" /></Article>' in data
